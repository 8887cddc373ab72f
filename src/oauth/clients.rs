//! Client authentication by certificate (RFC 8705 §2): whether the certificate on a connection
//! authenticates a registered client.

use openssl::x509::X509;

use super::OAuthError;
use crate::config::TlsSettings;
use crate::registry::{AuthMethod, CertRecord, Client};
use crate::tls::{CertTrust, VerifiedClientCert};

/// RFC 8705 §2: does the certificate on this connection authenticate `client`?
pub fn authenticate(client: &Client, cert: &VerifiedClientCert) -> Result<(), OAuthError> {
    if let Some(why) = client.status.refusal() {
        return Err(OAuthError::InvalidClient(format!(
            "client {} {why}",
            client.client_id
        )));
    }
    match client.auth_method {
        AuthMethod::TlsClientAuth => {
            if cert.trust() != CertTrust::Chain {
                return Err(OAuthError::InvalidClient(
                    "tls_client_auth needs a certificate issued by a trusted CA".into(),
                ));
            }
            // The issuing CA is matched by its key: two trusted CAs may share a DN. Only
            // certificates registered before issuer keys were recorded match by DN.
            let by_key = cert
                .issuer_key()
                .is_some_and(|k| client.cert_issuer_keys.iter().any(|r| r == k));
            let by_legacy_dn = client.cert_issuers.iter().any(|i| i == cert.issuer());
            if !(by_key || by_legacy_dn) {
                return Err(OAuthError::InvalidClient(format!(
                    "certificate issuer {:?} (CA key {}) issued no certificate registered for \
                     client {}",
                    cert.issuer(),
                    cert.issuer_key().unwrap_or("unknown"),
                    client.client_id
                )));
            }
            if client.subject_dn.as_deref() != Some(cert.subject()) {
                return Err(OAuthError::InvalidClient(format!(
                    "certificate subject {:?} does not match the registered \
                     tls_client_auth_subject_dn of client {}",
                    cert.subject(),
                    client.client_id
                )));
            }
            Ok(())
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            if client
                .cert_thumbprints
                .iter()
                .any(|t| crate::tls::peer::ct_eq(t.as_bytes(), cert.thumbprint_b64().as_bytes()))
            {
                Ok(())
            } else {
                Err(OAuthError::InvalidClient(format!(
                    "certificate thumbprint {} is not registered for client {}",
                    cert.thumbprint_b64(),
                    client.client_id
                )))
            }
        }
    }
}

/// Whether `cert` may join `client`'s certificate set: readable, unexpired, and able to
/// authenticate the client the way it is registered (a `tls_client_auth` certificate chains to
/// a trusted CA and names the registered subject; a `self_signed_tls_client_auth` one is
/// self-signed). Returns its record, or why not.
pub fn admissible_certificate(
    client: &Client,
    cert: &X509,
    tls: &TlsSettings,
    now: i64,
) -> Result<CertRecord, String> {
    let mut record = crate::tls::peer::registration_record(cert)
        .ok_or_else(|| "the certificate cannot be read".to_string())?;
    if record.not_after <= now {
        return Err("the certificate has expired".into());
    }
    match client.auth_method {
        AuthMethod::TlsClientAuth => {
            let issuer_key = crate::tls::verify_with_trust_anchors(tls, cert)
                .map_err(|e| format!("not issued by a trusted CA (tls.client_ca): {e}"))?;
            record.issuer_key = Some(issuer_key);
            if client.subject_dn.as_deref() != Some(record.subject.as_str()) {
                return Err(format!(
                    "subject {:?} is not the client's tls_client_auth_subject_dn {:?}",
                    record.subject,
                    client.subject_dn.as_deref().unwrap_or_default()
                ));
            }
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            let self_signed = cert.issuer_name_hash() == cert.subject_name_hash()
                && cert
                    .public_key()
                    .and_then(|k| cert.verify(&k))
                    .unwrap_or(false);
            if !self_signed {
                return Err("self_signed_tls_client_auth needs a self-signed certificate".into());
            }
            record.issuer_key = crate::tls::peer::key_id(cert);
        }
    }
    Ok(record)
}
