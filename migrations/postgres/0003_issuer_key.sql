-- The issuing CA's key (base64url SHA-256 of its SubjectPublicKeyInfo): tls_client_auth matches
-- it, not the CA's DN, which two CAs can share. Empty for certificates registered before.
ALTER TABLE client_certificates ADD COLUMN issuer_key TEXT;
