//! Authorization server metadata (RFC 8414), with RFC 8705 §5 `mtls_endpoint_aliases`.
//! Only endpoints that exist are advertised.

use serde_json::{Value, json};

use super::Scope;
use super::keys::SigningAlg;

/// `require_signed_request_object` is the policy's setting at start (RFC 9101 §10.5).
pub fn document(
    public_url: &str,
    mtls_url: &str,
    alg: SigningAlg,
    require_signed_request_object: bool,
) -> Value {
    let token = format!("{mtls_url}/token");
    let introspection = format!("{mtls_url}/introspect");
    let revocation = format!("{mtls_url}/revoke");
    let par = format!("{mtls_url}/par");
    let auth_methods = ["tls_client_auth", "self_signed_tls_client_auth"];
    json!({
        "issuer": public_url,
        "jwks_uri": format!("{public_url}/jwks"),
        "authorization_endpoint": format!("{public_url}/authorize"),
        "token_endpoint": token,
        "pushed_authorization_request_endpoint": par,
        "require_pushed_authorization_requests": true,
        "introspection_endpoint": introspection,
        "revocation_endpoint": revocation,
        "mtls_endpoint_aliases": {
            "token_endpoint": token,
            "pushed_authorization_request_endpoint": par,
            "introspection_endpoint": introspection,
            "revocation_endpoint": revocation,
        },
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "request_object_signing_alg_values_supported": ["ES256", "PS256"],
        "claims_parameter_supported": true,
        "require_signed_request_object": require_signed_request_object,
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": [alg.as_str()],
        "acr_values_supported": ["urn:openbanking:psd2:sca"],
        "claims_supported": ["openbanking_intent_id"],
        "scopes_supported": Scope::ALL.map(Scope::as_str),
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "tls_client_certificate_bound_access_tokens": true,
        "access_token_signing_alg_values_supported": [alg.as_str()],
    })
}
