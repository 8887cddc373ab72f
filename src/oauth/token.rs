//! Access tokens: RFC 9068 JWTs bound to the client certificate (RFC 8705 §3).
//! Minting happens here; so does verification, and only verification can build a
//! [`BoundToken`].

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SigningKeys;
use super::{OAuthError, ScopeSet};
use crate::registry::ClientId;
use crate::state::SharedState;
use crate::tls::{Thumbprint, VerifiedClientCert};

/// `typ` of an RFC 9068 access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// RFC 8705 §3.1 confirmation claim.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The claims of an access token (RFC 9068 §2.2 plus `cnf`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    pub cnf: Confirmation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
}

/// Why a presented access token is refused. `Display` is the `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    #[error("the access token's alg {0:?} is not accepted; tokens are signed with ES256 or PS256")]
    AlgorithmNotAllowed(String),
    #[error("the access token's typ must be at+jwt (RFC 9068)")]
    WrongType,
    #[error("the access token's kid is not one of this server's keys")]
    UnknownKey,
    #[error("the access token's signature does not verify")]
    BadSignature,
    #[error("the access token was not issued by this server (iss)")]
    WrongIssuer,
    #[error("the access token is not meant for this resource server (aud)")]
    WrongAudience,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the access token has been revoked")]
    Revoked(Signed),
    #[error("the access token has no cnf.x5t#S256 certificate binding")]
    Unbound,
    #[error(
        "certificate binding mismatch: the token is bound to certificate thumbprint {bound}, \
         but this connection's certificate has thumbprint {presented}"
    )]
    BindingMismatch {
        bound: String,
        presented: String,
        token: Signed,
    },
    #[error(
        "the certificate this token is bound to (x5t#S256 {thumbprint}) has been revoked; \
         tokens bound to it are refused"
    )]
    CertificateRevoked { thumbprint: String, token: Signed },
    #[error("token revocation state is unavailable; refusing to accept tokens")]
    StateUnavailable,
}

/// The key under which a revoked client certificate is kept with the revoked tokens, so one
/// lookup answers for a token and the certificate it is bound to. `jti`s are UUIDs and never
/// look like this.
pub fn certificate_revocation_key(thumbprint_b64: &str) -> String {
    format!("x5t#S256:{thumbprint_b64}")
}

/// Identifies a token whose signature verified, so a refusal of it can say which token it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub jti: String,
}

impl TokenRejection {
    /// The refused token's identity, when its signature verified.
    pub fn signed(&self) -> Option<&Signed> {
        match self {
            Self::Revoked(s)
            | Self::BindingMismatch { token: s, .. }
            | Self::CertificateRevoked { token: s, .. } => Some(s),
            _ => None,
        }
    }

    /// Short machine reason for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::AlgorithmNotAllowed(_) => "token_alg_not_allowed",
            Self::WrongType => "token_wrong_type",
            Self::UnknownKey => "token_unknown_key",
            Self::BadSignature => "token_bad_signature",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::WrongAudience => "token_wrong_audience",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Revoked(_) => "token_revoked",
            Self::Unbound => "token_unbound",
            Self::BindingMismatch { .. } => "binding_mismatch",
            Self::CertificateRevoked { .. } => "certificate_revoked",
            Self::StateUnavailable => "state_unavailable",
        }
    }
}

/// A token whose signature and claims verified, that is not revoked, and whose `cnf.x5t#S256`
/// equals the thumbprint of the certificate on the connection it arrived on.
#[derive(Debug)]
pub struct BoundToken {
    claims: AccessTokenClaims,
    client_id: ClientId,
    scopes: ScopeSet,
}

impl BoundToken {
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }
    pub fn jti(&self) -> &str {
        &self.claims.jti
    }
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }
    pub fn consent_id(&self) -> Option<&str> {
        self.claims.consent_id.as_deref()
    }
}

/// Who a customer grant's tokens speak for: the consent, and the customer as a pairwise
/// subject (the same customer looks different to each client; RFC 9068 §2.2 `sub`).
#[derive(Clone, Debug)]
pub struct CustomerGrant {
    pub consent_id: String,
    pub subject: String,
}

impl CustomerGrant {
    pub fn new(consent_id: &str, client_id: &str, psu: &str) -> Self {
        let input = format!("obgate-sub\u{1f}{client_id}\u{1f}{psu}");
        let subject = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), input.as_bytes())
            .map(|d| URL_SAFE_NO_PAD.encode(&d[..16]))
            .unwrap_or_default();
        Self {
            consent_id: consent_id.to_string(),
            subject,
        }
    }
}

/// OpenID Connect ID token claims (OIDC Core §2), with UK Open Banking's intent id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub acr: String,
    pub openbanking_intent_id: String,
}

pub struct MintedToken {
    pub access_token: String,
    pub jti: String,
    pub expires_in: i64,
    pub scope: ScopeSet,
}

/// Issues and verifies access tokens for one issuer and audience.
pub struct TokenService {
    keys: Arc<SigningKeys>,
    issuer: String,
    audience: String,
}

impl TokenService {
    pub fn new(keys: Arc<SigningKeys>, issuer: String, audience: String) -> Self {
        Self {
            keys,
            issuer,
            audience,
        }
    }

    /// The signing keys (for the JWKS and reloads).
    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    /// Mints a token bound to `cert`, valid for `lifetime` seconds from `now`.
    pub fn mint(
        &self,
        client_id: &ClientId,
        scope: ScopeSet,
        cert: &VerifiedClientCert,
        customer: Option<&CustomerGrant>,
        lifetime: i64,
        now: i64,
    ) -> Result<MintedToken, OAuthError> {
        let ring = self.keys.ring();
        let key = ring.active();
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: customer.map_or_else(|| client_id.to_string(), |c| c.subject.clone()),
            aud: self.audience.clone(),
            client_id: client_id.to_string(),
            scope: scope.to_string(),
            iat: now,
            nbf: now,
            exp: now + lifetime,
            jti: jti.clone(),
            cnf: Confirmation {
                x5t_s256: cert.thumbprint_b64().to_string(),
            },
            consent_id: customer.map(|c| c.consent_id.clone()),
        };
        let mut header = Header::new(key.alg.jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        header.kid = Some(key.kid.clone());
        let access_token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| OAuthError::ServerError(format!("token signing failed: {e}")))?;
        Ok(MintedToken {
            access_token,
            jti,
            expires_in: lifetime,
            scope,
        })
    }

    /// An ID token for the client (`aud`), signed with the same key as access tokens.
    pub fn mint_id_token(
        &self,
        client_id: &ClientId,
        customer: &CustomerGrant,
        nonce: Option<String>,
        auth_time: i64,
        lifetime: i64,
        now: i64,
    ) -> Result<String, OAuthError> {
        let ring = self.keys.ring();
        let key = ring.active();
        let claims = IdTokenClaims {
            iss: self.issuer.clone(),
            sub: customer.subject.clone(),
            aud: client_id.to_string(),
            iat: now,
            exp: now + lifetime,
            auth_time,
            nonce,
            acr: "urn:openbanking:psd2:sca".into(),
            openbanking_intent_id: customer.consent_id.clone(),
        };
        let mut header = Header::new(key.alg.jwt());
        header.typ = Some("JWT".into());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| OAuthError::ServerError(format!("ID token signing failed: {e}")))
    }

    /// Signature, `typ`, `iss`, `aud`, `exp`, `nbf` and revocation; no certificate binding.
    /// For introspection and revocation, where the caller's certificate may legitimately differ.
    pub async fn verify_unbound(
        &self,
        raw: &str,
        state: &SharedState,
        now: i64,
    ) -> Result<AccessTokenClaims, TokenRejection> {
        let claims = self.verify_signed(raw, now)?;
        let certificate = certificate_revocation_key(&claims.cnf.x5t_s256);
        match state.first_revoked(&[&claims.jti, &certificate]).await {
            Ok(None) => Ok(claims),
            Ok(Some(0)) => Err(TokenRejection::Revoked(Signed { jti: claims.jti })),
            Ok(Some(_)) => Err(TokenRejection::CertificateRevoked {
                thumbprint: claims.cnf.x5t_s256,
                token: Signed { jti: claims.jti },
            }),
            Err(_) => Err(TokenRejection::StateUnavailable),
        }
    }

    /// The resource servers' check: everything of [`Self::verify_unbound`], then the binding
    /// of `cnf.x5t#S256` to the certificate on this connection.
    pub async fn verify_bound(
        &self,
        raw: &str,
        cert: &VerifiedClientCert,
        state: &SharedState,
        now: i64,
    ) -> Result<BoundToken, TokenRejection> {
        let claims = self.verify_unbound(raw, state, now).await?;
        let bound = Thumbprint::from_b64url(&claims.cnf.x5t_s256).ok_or(TokenRejection::Unbound)?;
        if !bound.ct_eq(cert.thumbprint()) {
            return Err(TokenRejection::BindingMismatch {
                bound: claims.cnf.x5t_s256,
                presented: cert.thumbprint_b64().to_string(),
                token: Signed { jti: claims.jti },
            });
        }
        let client_id =
            ClientId::try_from(claims.client_id.clone()).map_err(|_| TokenRejection::Malformed)?;
        let scopes = ScopeSet::parse(&claims.scope).map_err(|_| TokenRejection::Malformed)?;
        Ok(BoundToken {
            claims,
            client_id,
            scopes,
        })
    }

    fn verify_signed(&self, raw: &str, now: i64) -> Result<AccessTokenClaims, TokenRejection> {
        let header = raw.split('.').next().ok_or(TokenRejection::Malformed)?;
        if raw.split('.').count() != 3 {
            return Err(TokenRejection::Malformed);
        }
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenRejection::Malformed)?;
        let alg = header["alg"].as_str().unwrap_or_default();
        if alg != "ES256" && alg != "PS256" {
            return Err(TokenRejection::AlgorithmNotAllowed(alg.to_string()));
        }
        let typ = header["typ"].as_str().unwrap_or_default();
        if !typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
            && !typ.eq_ignore_ascii_case("application/at+jwt")
        {
            return Err(TokenRejection::WrongType);
        }
        if header.get("crit").is_some() {
            return Err(TokenRejection::Malformed);
        }
        let kid = header["kid"].as_str().ok_or(TokenRejection::UnknownKey)?;
        let mut ring = self.keys.ring();
        if ring.find(kid).is_none() {
            // Another instance sharing the keys directory may have rotated its key.
            ring = self.keys.ring_after_unknown_kid();
        }
        let key = ring.find(kid).ok_or(TokenRejection::UnknownKey)?;
        if key.alg.as_str() != alg {
            return Err(TokenRejection::AlgorithmNotAllowed(alg.to_string()));
        }
        let mut validation = Validation::new(key.alg.jwt());
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<AccessTokenClaims>(raw, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenRejection::BadSignature,
                ErrorKind::InvalidAlgorithm => TokenRejection::AlgorithmNotAllowed(alg.to_string()),
                _ => TokenRejection::Malformed,
            })?;
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(TokenRejection::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenRejection::WrongAudience);
        }
        if now >= claims.exp {
            return Err(TokenRejection::Expired);
        }
        if now < claims.nbf {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }
}
