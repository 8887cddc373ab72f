//! The authorization server's logic, free of web-framework types: clients and their
//! authentication, scopes, grants, signing keys, and the minting and verification of
//! certificate-bound access tokens.

pub mod authorize;
pub mod clients;
pub mod grants;
pub mod jose;
pub mod keys;
pub mod metadata;
pub mod request_object;
pub mod token;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// RFC 6749 §5.2 token-endpoint errors. `Display` is the wire code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("invalid_request")]
    InvalidRequest(String),
    #[error("invalid_client")]
    InvalidClient(String),
    #[error("invalid_grant")]
    InvalidGrant(String),
    #[error("unauthorized_client")]
    UnauthorizedClient(String),
    #[error("invalid_scope")]
    InvalidScope(String),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType(String),
    #[error("unsupported_response_type")]
    UnsupportedResponseType(String),
    /// RFC 9101 §6.3.
    #[error("invalid_request_object")]
    InvalidRequestObject(String),
    #[error("server_error")]
    ServerError(String),
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable(String),
}

impl OAuthError {
    /// The human-readable `error_description`.
    pub fn description(&self) -> &str {
        match self {
            Self::InvalidRequest(d)
            | Self::InvalidClient(d)
            | Self::InvalidGrant(d)
            | Self::UnauthorizedClient(d)
            | Self::InvalidScope(d)
            | Self::UnsupportedGrantType(d)
            | Self::UnsupportedResponseType(d)
            | Self::InvalidRequestObject(d)
            | Self::ServerError(d)
            | Self::TemporarilyUnavailable(d) => d,
        }
    }

    /// A backend outage: the caller hears which backend, the log gets the cause (its text can
    /// name hosts, tables or keys, which are nobody's business outside).
    pub fn unavailable(backend: &str, cause: impl fmt::Display) -> Self {
        tracing::error!(%cause, backend, "a backend is unavailable");
        Self::TemporarilyUnavailable(format!(
            "the gateway's {backend} is unavailable; nothing was done, retry shortly"
        ))
    }

    /// HTTP status per RFC 6749 §5.2 (401 for client authentication failures).
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClient(_) => 401,
            Self::ServerError(_) => 500,
            Self::TemporarilyUnavailable(_) => 503,
            _ => 400,
        }
    }
}

/// UK Open Banking scopes, plus `openid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "openid")]
    OpenId,
    #[serde(rename = "accounts")]
    Accounts,
    #[serde(rename = "payments")]
    Payments,
    #[serde(rename = "fundsconfirmations")]
    FundsConfirmations,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::OpenId,
        Scope::Accounts,
        Scope::Payments,
        Scope::FundsConfirmations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OpenId => "openid",
            Scope::Accounts => "accounts",
            Scope::Payments => "payments",
            Scope::FundsConfirmations => "fundsconfirmations",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes; its string form is space-separated (RFC 6749 §3.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn parse(s: &str) -> Result<Self, String> {
        s.split(' ')
            .filter(|p| !p.is_empty())
            .map(Scope::from_str)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
            first = false;
        }
        Ok(())
    }
}

/// The scope a `client_credentials` grant gets: what was asked for, which must be within what
/// the client's roles allow. Nothing asked for is refused, naming what may be (least
/// privilege: a token carries the scopes its caller chose, never all of them by default).
/// `openid` needs a customer, so it is never granted here.
pub fn client_credentials_scope(
    requested: Option<&str>,
    allowed: &ScopeSet,
) -> Result<ScopeSet, OAuthError> {
    let allowed: ScopeSet = allowed.iter().filter(|s| *s != Scope::OpenId).collect();
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        if allowed.is_empty() {
            return Err(OAuthError::InvalidScope(
                "scope is required, and this client's roles allow no scope".into(),
            ));
        }
        return Err(OAuthError::InvalidScope(format!(
            "scope is required; this client may ask for: {allowed}"
        )));
    };
    let requested = ScopeSet::parse(requested).map_err(OAuthError::InvalidScope)?;
    if requested.contains(Scope::OpenId) {
        return Err(OAuthError::InvalidScope(
            "openid needs a customer and is not available with client_credentials".into(),
        ));
    }
    if let Some(extra) = requested.iter().find(|s| !allowed.contains(*s)) {
        return Err(OAuthError::InvalidScope(format!(
            "scope {extra} is not allowed for this client's roles"
        )));
    }
    Ok(requested)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap_or_default()
    }

    #[test]
    fn client_credentials_without_a_scope_is_refused_naming_what_may_be_asked_for() {
        let refused = client_credentials_scope(None, &set("openid accounts payments"));
        assert!(
            matches!(&refused, Err(OAuthError::InvalidScope(d))
                if d.contains("accounts payments") && !d.contains("openid")),
            "{refused:?}"
        );
        assert!(matches!(
            client_credentials_scope(Some("  "), &set("accounts")),
            Err(OAuthError::InvalidScope(_))
        ));
    }

    #[test]
    fn client_credentials_refuses_scopes_beyond_the_roles_and_openid() {
        assert!(matches!(
            client_credentials_scope(Some("payments"), &set("accounts")),
            Err(OAuthError::InvalidScope(_))
        ));
        assert!(matches!(
            client_credentials_scope(Some("openid accounts"), &set("openid accounts")),
            Err(OAuthError::InvalidScope(_))
        ));
        assert!(matches!(
            client_credentials_scope(Some("accounts bogus"), &set("accounts")),
            Err(OAuthError::InvalidScope(_))
        ));
    }

    #[test]
    fn scope_set_prints_space_separated_in_stable_order() {
        assert_eq!(set("payments  accounts").to_string(), "accounts payments");
    }
}
