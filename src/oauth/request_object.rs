//! Signed request objects (JAR, RFC 9101) at the pushed authorization request endpoint,
//! verified against the public keys the client registered (a JWK Set).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::OAuthError;
use crate::registry::Client;

/// FAPI 2.0 §5.3.2.1: a request object lives at most 60 minutes (`exp - nbf`).
const MAX_LIFETIME: i64 = 3600;

/// Parses a client's JWK Set: every key has a `kid`, is an EC P-256 or RSA public key, and no
/// key carries private parts.
pub fn parse_client_jwks(text: &str) -> Result<JwkSet, String> {
    let raw: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let keys = raw["keys"]
        .as_array()
        .ok_or("not a JWK Set: no \"keys\" array")?;
    if keys.is_empty() {
        return Err("the JWK Set has no keys".into());
    }
    for (i, k) in keys.iter().enumerate() {
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|f| k.get(f).is_some())
        {
            return Err(format!("keys[{i}] contains private key material"));
        }
    }
    let set: JwkSet = serde_json::from_value(raw).map_err(|e| format!("invalid JWK: {e}"))?;
    for (i, k) in set.keys.iter().enumerate() {
        if k.common.key_id.as_deref().is_none_or(str::is_empty) {
            return Err(format!("keys[{i}] has no kid"));
        }
        match &k.algorithm {
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {}
            AlgorithmParameters::RSA(_) => {}
            _ => return Err(format!("keys[{i}] is neither an EC P-256 nor an RSA key")),
        }
    }
    Ok(set)
}

fn invalid(msg: impl Into<String>) -> OAuthError {
    OAuthError::InvalidRequestObject(msg.into())
}

/// Verifies `jwt` as a request object of `client` for this `issuer`, and returns its claims
/// (the authorization request parameters).
pub fn verify(
    jwt: &str,
    client: &Client,
    issuer: &str,
    now: i64,
) -> Result<Map<String, Value>, OAuthError> {
    let jwks = client.jwks.as_deref().ok_or_else(|| {
        invalid("the client has registered no keys (jwks) to verify request objects with")
    })?;
    let jwks = parse_client_jwks(jwks).map_err(|e| invalid(format!("registered jwks: {e}")))?;
    let header: Value = jwt
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("the request object is not a JWT"))?;
    let alg = match header["alg"].as_str() {
        Some("ES256") => Algorithm::ES256,
        Some("PS256") => Algorithm::PS256,
        other => {
            return Err(invalid(format!(
                "request object alg {other:?} is not accepted; sign with ES256 or PS256"
            )));
        }
    };
    if let Some(typ) = header["typ"].as_str()
        && !typ.eq_ignore_ascii_case("oauth-authz-req+jwt")
    {
        return Err(invalid(format!(
            "request object typ {typ:?}: use oauth-authz-req+jwt (RFC 9101 §10.8)"
        )));
    }
    let kid = header["kid"]
        .as_str()
        .ok_or_else(|| invalid("the request object header has no kid"))?;
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| invalid(format!("kid {kid:?} is not one of the client's keys")))?;
    let usable = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature)
        && jwk
            .common
            .key_algorithm
            .is_none_or(|a| format!("{a:?}") == format!("{alg:?}"));
    if !usable {
        return Err(invalid(format!(
            "key {kid:?} is registered for another use or algorithm"
        )));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key {kid:?}: {e}")))?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(jwt, &key, &validation)
        .map_err(|e| invalid(format!("the request object does not verify: {e}")))?
        .claims;
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if str_claim("iss") != Some(client.client_id.as_str()) {
        return Err(invalid("request object iss must be the client_id"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == issuer,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(issuer)),
        _ => false,
    };
    if !aud_ok {
        return Err(invalid(format!(
            "request object aud must be the issuer {issuer}"
        )));
    }
    if let Some(id) = str_claim("client_id")
        && id != client.client_id.as_str()
    {
        return Err(invalid("request object client_id is another client's"));
    }
    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims.get("nbf").and_then(Value::as_i64);
    let (Some(exp), Some(nbf)) = (exp, nbf) else {
        return Err(invalid("request object needs exp and nbf (FAPI 2.0)"));
    };
    if exp <= now {
        return Err(invalid("the request object has expired"));
    }
    if nbf > now + 60 {
        return Err(invalid("the request object is not valid yet (nbf)"));
    }
    if exp - nbf > MAX_LIFETIME || now - nbf > MAX_LIFETIME {
        return Err(invalid(
            "the request object may live at most 60 minutes (exp - nbf)",
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_with_private_parts_or_without_kid_are_refused() {
        let public = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        assert!(parse_client_jwks(public).is_ok());
        assert!(parse_client_jwks(&public.replace("\"kid\":\"k1\",", "")).is_err());
        assert!(parse_client_jwks(&public.replace("\"kid\"", "\"d\":\"secret\",\"kid\"")).is_err());
        assert!(parse_client_jwks(r#"{"keys":[]}"#).is_err());
        assert!(parse_client_jwks("[]").is_err());
    }
}
