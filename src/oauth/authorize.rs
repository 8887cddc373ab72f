//! The authorization code flow's front half: pushed authorization requests (RFC 9126), their
//! validation (FAPI 2.0: PAR only, PKCE S256 only, registered redirect URIs), and the
//! single-use values it hands out (`request_uri`, authorization codes).

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::hash::{MessageDigest, hash};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{OAuthError, Scope, ScopeSet};
use crate::consent::Kind;
use crate::registry::Client;

pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a `request_uri` may be used (RFC 9126 §2.2; FAPI 2.0 asks for under 600 s).
pub const REQUEST_URI_LIFETIME: i64 = 90;
/// How long an authorization code lives (FAPI 2.0 §5.3.2.1: at most 60 s).
pub const CODE_LIFETIME: i64 = 60;
/// How long a redeemed code is remembered, so a replay is recognised and punished.
pub const USED_CODE_MEMORY: i64 = 600;

/// A validated authorization request, kept under its `request_uri` until `/authorize` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub consent_id: String,
    /// The consent kind the resource scope asks for (`account-access`, …).
    pub consent_kind: Kind,
}

/// What an authorization code stands for: the request, and who approved it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedCode {
    pub request: AuthorizationRequest,
    pub psu: String,
    /// When the customer authenticated (OIDC `auth_time`).
    pub auth_time: i64,
}

/// Random, URL-safe, 256 bits.
pub fn random_token() -> Result<String, OAuthError> {
    let mut buf = [0u8; 32];
    openssl::rand::rand_bytes(&mut buf)
        .map_err(|e| OAuthError::ServerError(format!("random source failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

pub use crate::digest::sha256_hex as digest;

pub fn request_uri_key(request_uri: &str) -> String {
    format!("par:{}", digest(request_uri))
}

pub fn code_key(code: &str) -> String {
    format!("code:{}", digest(code))
}

pub fn used_code_key(code: &str) -> String {
    format!("code-used:{}", digest(code))
}

/// RFC 7636 §4.1/§4.6 with S256: the verifier's shape, then its hash against the challenge.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let shape_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !shape_ok {
        return false;
    }
    let Ok(d) = hash(MessageDigest::sha256(), verifier.as_bytes()) else {
        return false;
    };
    openssl::memcmp::eq(URL_SAFE_NO_PAD.encode(d).as_bytes(), challenge.as_bytes())
        && challenge.len() == 43
}

/// Parses a form body into parameters, refusing repeated ones (RFC 6749 §3.1).
pub fn form_params(body: &[u8]) -> Result<Map<String, Value>, OAuthError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| OAuthError::InvalidRequest(format!("malformed form body: {e}")))?;
    let mut seen = HashSet::new();
    let mut map = Map::new();
    for (k, v) in pairs {
        if !seen.insert(k.clone()) {
            return Err(OAuthError::InvalidRequest(format!(
                "parameter {k} is repeated"
            )));
        }
        map.insert(k, Value::String(v));
    }
    Ok(map)
}

/// The consent kind a resource scope authorises.
pub fn consent_kind_for(scope: Scope) -> Option<Kind> {
    match scope {
        Scope::Accounts => Some(Kind::AccountAccess),
        Scope::Payments => Some(Kind::DomesticPayment),
        Scope::FundsConfirmations => Some(Kind::FundsConfirmation),
        Scope::OpenId => None,
    }
}

/// The UK Open Banking intent id: `claims.id_token.openbanking_intent_id.value` (or under
/// `userinfo`). `claims` is a JSON string in a form and an object in a request object.
fn intent_id(claims: Option<&Value>) -> Result<String, OAuthError> {
    let parsed;
    let claims = match claims {
        Some(Value::String(s)) => {
            parsed = serde_json::from_str::<Value>(s).map_err(|e| {
                OAuthError::InvalidRequest(format!("claims is not a JSON object: {e}"))
            })?;
            &parsed
        }
        Some(v @ Value::Object(_)) => v,
        _ => {
            return Err(OAuthError::InvalidRequest(
                "claims with id_token.openbanking_intent_id (the ConsentId) is required".into(),
            ));
        }
    };
    ["id_token", "userinfo"]
        .iter()
        .find_map(|m| claims[m]["openbanking_intent_id"]["value"].as_str())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .ok_or_else(|| {
            OAuthError::InvalidRequest(
                "claims must carry id_token.openbanking_intent_id.value (the ConsentId)".into(),
            )
        })
}

/// Validates pushed authorization request parameters for `client`. `allowed` is what the
/// client's roles may hold. The consent itself is checked by the caller, against the store.
pub fn validate(
    params: &Map<String, Value>,
    client: &Client,
    allowed: &ScopeSet,
) -> Result<AuthorizationRequest, OAuthError> {
    let get = |name: &str| -> Result<Option<&str>, OAuthError> {
        match params.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 2048 => Ok(Some(s.as_str())),
            Some(_) => Err(OAuthError::InvalidRequest(format!(
                "{name} must be a string of at most 2048 characters"
            ))),
        }
    };
    let required = |name: &str| -> Result<&str, OAuthError> {
        get(name)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
    };
    if params.contains_key("request_uri") {
        return Err(OAuthError::InvalidRequest(
            "request_uri may not be pushed (RFC 9126 §2.1)".into(),
        ));
    }
    if let Some(id) = get("client_id")?
        && id != client.client_id.as_str()
    {
        return Err(OAuthError::InvalidRequest(
            "client_id differs from the authenticated client".into(),
        ));
    }
    match required("response_type")? {
        "code" => {}
        other => {
            return Err(OAuthError::UnsupportedResponseType(format!(
                "response_type {other:?} is not supported; FAPI 2.0 uses code"
            )));
        }
    }
    if let Some(mode) = get("response_mode")?
        && mode != "query"
    {
        return Err(OAuthError::InvalidRequest(format!(
            "response_mode {mode:?} is not supported; use query"
        )));
    }
    let redirect_uri = required("redirect_uri")?;
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Err(OAuthError::InvalidRequest(format!(
            "redirect_uri {redirect_uri:?} is not registered for this client"
        )));
    }
    match get("code_challenge_method")? {
        Some("S256") => {}
        Some(other) => {
            return Err(OAuthError::InvalidRequest(format!(
                "code_challenge_method {other:?} is not accepted; use S256"
            )));
        }
        None => {
            return Err(OAuthError::InvalidRequest(
                "PKCE is required: send code_challenge with code_challenge_method=S256".into(),
            ));
        }
    }
    let code_challenge = required("code_challenge")?;
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(OAuthError::InvalidRequest(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)".into(),
        ));
    }
    let scope = ScopeSet::parse(required("scope")?).map_err(OAuthError::InvalidScope)?;
    if let Some(extra) = scope.iter().find(|s| !allowed.contains(*s)) {
        return Err(OAuthError::InvalidScope(format!(
            "scope {extra} is not allowed for this client's roles"
        )));
    }
    let kinds: Vec<Kind> = scope.iter().filter_map(consent_kind_for).collect();
    let [consent_kind] = kinds.as_slice() else {
        return Err(OAuthError::InvalidScope(
            "ask for exactly one of accounts, payments or fundsconfirmations".into(),
        ));
    };
    let short = |name: &str, max: usize| -> Result<Option<String>, OAuthError> {
        match get(name)? {
            Some(v) if v.len() > max || v.chars().any(char::is_control) => Err(
                OAuthError::InvalidRequest(format!("{name} must be at most {max} characters")),
            ),
            v => Ok(v.map(str::to_string)),
        }
    };
    Ok(AuthorizationRequest {
        client_id: client.client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        scope: scope.to_string(),
        state: short("state", 512)?,
        nonce: short("nonce", 512)?,
        code_challenge: code_challenge.to_string(),
        consent_id: intent_id(params.get("claims"))?,
        consent_kind: *consent_kind,
    })
}

/// The redirect back to the client (RFC 6749 §4.1.2, RFC 9207 `iss`), with a code or an error.
pub fn redirect_to(
    request: &AuthorizationRequest,
    issuer: &str,
    outcome: Result<&str, (&str, &str)>,
) -> String {
    let mut pairs: Vec<(&str, &str)> = match outcome {
        Ok(code) => vec![("code", code)],
        Err((error, description)) => vec![("error", error), ("error_description", description)],
    };
    if let Some(state) = &request.state {
        pairs.push(("state", state));
    }
    pairs.push(("iss", issuer));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    let sep = if request.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{query}", request.redirect_uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{AuthMethod, ClientStatus, Role};

    fn client() -> Client {
        Client {
            client_id: "tpp".parse().unwrap_or_else(|_| unreachable!()),
            name: "TPP".into(),
            status: ClientStatus::Active,
            roles: vec![Role::Aisp],
            auth_method: AuthMethod::TlsClientAuth,
            subject_dn: None,
            cert_thumbprints: vec![],
            cert_issuers: vec![],
            cert_issuer_keys: vec![],
            redirect_uris: vec!["https://tpp.example/cb".into()],
            jwks: None,
            created_at: String::new(),
        }
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn params(extra: &[(&str, &str)]) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in [
            ("response_type", "code"),
            ("client_id", "tpp"),
            ("redirect_uri", "https://tpp.example/cb"),
            ("scope", "openid accounts"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            (
                "claims",
                r#"{"id_token":{"openbanking_intent_id":{"value":"aac-1","essential":true}}}"#,
            ),
        ] {
            m.insert(k.into(), Value::String(v.into()));
        }
        for (k, v) in extra {
            if v.is_empty() {
                m.remove(*k);
            } else {
                m.insert((*k).into(), Value::String((*v).into()));
            }
        }
        m
    }

    fn check(extra: &[(&str, &str)]) -> Result<AuthorizationRequest, OAuthError> {
        validate(
            &params(extra),
            &client(),
            &ScopeSet::parse("openid accounts").unwrap_or_default(),
        )
    }

    #[test]
    fn pkce_s256_matches_the_rfc_7636_example_only() {
        assert!(pkce_matches(VERIFIER, CHALLENGE));
        assert!(!pkce_matches(&VERIFIER.replace('d', "e"), CHALLENGE));
        assert!(!pkce_matches(CHALLENGE, CHALLENGE));
        assert!(!pkce_matches("short", CHALLENGE));
    }

    #[test]
    fn a_good_request_yields_the_consent_id_and_kind() -> Result<(), OAuthError> {
        let r = check(&[("state", "xyz")])?;
        assert_eq!(r.consent_id, "aac-1");
        assert_eq!(r.consent_kind, Kind::AccountAccess);
        assert_eq!(r.state.as_deref(), Some("xyz"));
        Ok(())
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let desc = |extra: &[(&str, &str)]| match check(extra) {
            Err(e) => format!("{e}: {}", e.description()),
            Ok(_) => "accepted".into(),
        };
        assert!(desc(&[("code_challenge_method", "plain")]).contains("S256"));
        assert!(desc(&[("code_challenge_method", "")]).contains("PKCE is required"));
        assert!(desc(&[("redirect_uri", "https://evil.example/cb")]).contains("not registered"));
        assert!(desc(&[("response_type", "token")]).starts_with("unsupported_response_type"));
        assert!(desc(&[("scope", "openid payments")]).starts_with("invalid_scope"));
        assert!(desc(&[("scope", "openid")]).starts_with("invalid_scope"));
        assert!(desc(&[("claims", "")]).contains("openbanking_intent_id"));
        assert!(desc(&[("request_uri", "urn:x")]).contains("may not be pushed"));
        assert!(desc(&[("client_id", "other")]).contains("differs"));
    }

    #[test]
    fn the_redirect_carries_state_and_iss_and_escapes_them() {
        let r = check(&[("state", "a b&c")]).unwrap_or_else(|_| unreachable!());
        assert_eq!(
            redirect_to(&r, "https://as.example", Ok("C0DE")),
            "https://tpp.example/cb?code=C0DE&state=a+b%26c&iss=https%3A%2F%2Fas.example"
        );
        assert!(
            redirect_to(&r, "https://as.example", Err(("access_denied", "no")))
                .starts_with("https://tpp.example/cb?error=access_denied&")
        );
    }
}
