//! Client authentication by certificate (RFC 8705 §2): whether the certificate on a connection
//! authenticates a registered client.

use super::OAuthError;
use crate::registry::{AuthMethod, Client, ClientStatus};
use crate::tls::{CertTrust, VerifiedClientCert};

/// RFC 8705 §2: does the certificate on this connection authenticate `client`?
pub fn authenticate(client: &Client, cert: &VerifiedClientCert) -> Result<(), OAuthError> {
    if client.status != ClientStatus::Active {
        return Err(OAuthError::InvalidClient(format!(
            "client {} is suspended",
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
            if !client.cert_issuers.iter().any(|i| i == cert.issuer()) {
                return Err(OAuthError::InvalidClient(format!(
                    "certificate issuer {:?} did not issue any certificate registered for \
                     client {}",
                    cert.issuer(),
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
