//! The client registry's vocabulary, on the ground floor: what a registered client (TPP) is,
//! its roles and authentication method, and what is known of a certificate. Storage, the TLS
//! layer, the authorization server and the edge all speak it; it depends on none of them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A client identifier: 1–64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "invalid client id {s:?}: use 1-64 characters of A-Z a-z 0-9 . _ -"
            ))
        }
    }
}

impl FromStr for ClientId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_string())
    }
}

impl From<ClientId> for String {
    fn from(c: ClientId) -> Self {
        c.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Open Banking TPP roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "AISP")]
    Aisp,
    #[serde(rename = "PISP")]
    Pisp,
    #[serde(rename = "CBPII")]
    Cbpii,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Aisp, Role::Pisp, Role::Cbpii];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Aisp => "AISP",
            Role::Pisp => "PISP",
            Role::Cbpii => "CBPII",
        }
    }

    /// Parses a comma-separated list such as `AISP,PISP`; empty lists are refused.
    pub fn parse_list(s: &str) -> Result<Vec<Role>, String> {
        let mut roles: Vec<Role> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Role::from_str)
            .collect::<Result<_, _>>()?;
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            return Err("at least one role is required (AISP, PISP, CBPII)".into());
        }
        Ok(roles)
    }

    pub fn join(roles: &[Role]) -> String {
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown role {s:?} (expected AISP, PISP or CBPII)"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 8705 client authentication methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// PKI method: the certificate chains to a trust anchor and its subject DN is registered.
    #[value(name = "tls_client_auth")]
    TlsClientAuth,
    /// Self-signed method: the certificate's thumbprint is registered.
    #[value(name = "self_signed_tls_client_auth")]
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

impl FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tls_client_auth" => Ok(Self::TlsClientAuth),
            "self_signed_tls_client_auth" => Ok(Self::SelfSignedTlsClientAuth),
            other => Err(format!("unknown auth method {other:?}")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    /// Registered, awaiting an operator's approval: its calls are refused.
    Pending,
    Active,
    Suspended,
    /// Gone for every call; kept so the audit log still says whose events were whose.
    Deleted,
}

impl ClientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Pending => "pending",
            ClientStatus::Active => "active",
            ClientStatus::Suspended => "suspended",
            ClientStatus::Deleted => "deleted",
        }
    }

    /// Why a client in this status may not call, for error descriptions; `None` when active.
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            ClientStatus::Active => None,
            ClientStatus::Pending => Some("is pending approval"),
            ClientStatus::Suspended => Some("is suspended"),
            ClientStatus::Deleted => Some("has been deleted"),
        }
    }
}

impl FromStr for ClientStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "deleted" => Ok(Self::Deleted),
            other => Err(format!("unknown client status {other:?}")),
        }
    }
}

/// What an operator can do to a client's status, and from which statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// A pending registration is let in.
    Approve,
    Suspend,
    /// A suspended (or, from the server host, pending) client is let in again.
    Activate,
    /// Soft: the client is gone for every call but kept for the audit log's sake.
    Delete,
}

impl Lifecycle {
    pub fn from(self) -> &'static [ClientStatus] {
        use ClientStatus::*;
        match self {
            Lifecycle::Approve => &[Pending],
            Lifecycle::Suspend => &[Pending, Active],
            Lifecycle::Activate => &[Pending, Suspended],
            Lifecycle::Delete => &[Pending, Active, Suspended],
        }
    }

    pub fn to(self) -> ClientStatus {
        match self {
            Lifecycle::Approve | Lifecycle::Activate => ClientStatus::Active,
            Lifecycle::Suspend => ClientStatus::Suspended,
            Lifecycle::Delete => ClientStatus::Deleted,
        }
    }
}

/// A registered client, as the registry stores it.
#[derive(Clone, Debug, Serialize)]
pub struct Client {
    pub client_id: ClientId,
    pub name: String,
    pub status: ClientStatus,
    pub roles: Vec<Role>,
    pub auth_method: AuthMethod,
    /// `tls_client_auth_subject_dn` (RFC 8705 §2.1.2), RFC 4514 form.
    pub subject_dn: Option<String>,
    pub cert_thumbprints: Vec<String>,
    /// Issuer DNs of the client's active certificates registered before their issuer's key
    /// was recorded: for those alone `tls_client_auth` still matches the issuer by DN.
    pub cert_issuers: Vec<String>,
    /// Keys of the CAs that issued the client's active certificates (see
    /// [`CertRecord::issuer_key`]).
    pub cert_issuer_keys: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// The client's public signing keys (RFC 7517 JWK Set), for signed request objects.
    pub jwks: Option<String>,
    pub created_at: String,
}

/// The most certificates a client may hold active at once (SPEC §6): room for a rotation or
/// two, not a way to share one client among many keys.
pub const MAX_ACTIVE_CERTS: usize = 5;

/// Where a certificate of a client's set stands. A revoked certificate stays in the set, so a
/// call over it can be told which certificate was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    Active,
    Revoked,
}

impl CertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }
}

impl FromStr for CertStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "revoked" => Ok(Self::Revoked),
            other => Err(format!("unknown certificate status {other:?}")),
        }
    }
}

/// One certificate of a client's set, with where it stands.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub record: CertRecord,
    pub status: CertStatus,
    /// When it joined the set (RFC 3339).
    pub added_at: String,
}

/// A certificate registered for a client, as the registry stores it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct CertRecord {
    /// base64url SHA-256 of the DER (RFC 8705 `x5t#S256`).
    pub thumbprint: String,
    /// RFC 4514 subject DN.
    pub subject: String,
    /// RFC 4514 issuer DN.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// base64url SHA-256 of the issuing CA's SubjectPublicKeyInfo (the certificate's own for
    /// a self-signed one); `None` for certificates registered before obgate recorded it.
    pub issuer_key: Option<String>,
}

/// Facts about a certificate that was presented, whether or not it was accepted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CertFacts {
    pub thumbprint: Option<String>,
    pub subject: Option<String>,
    pub serial: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_validated() {
        assert!(ClientId::from_str("demo-tpp").is_ok());
        assert!(ClientId::from_str("").is_err());
        assert!(ClientId::from_str("a b").is_err());
        assert!(ClientId::from_str(&"x".repeat(65)).is_err());
    }

    #[test]
    fn role_lists_parse_case_insensitively_and_refuse_unknowns() {
        assert_eq!(
            Role::parse_list("pisp, AISP,aisp"),
            Ok(vec![Role::Aisp, Role::Pisp])
        );
        assert!(Role::parse_list("AISP,BANK").is_err());
        assert!(Role::parse_list(" , ").is_err());
    }
}
