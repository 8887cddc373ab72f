//! Authorization server metadata (RFC 8414), with RFC 8705 §5 `mtls_endpoint_aliases`.
//! Only endpoints that exist are advertised.

use serde_json::{Value, json};

use super::Scope;
use super::keys::SigningAlg;

pub fn document(public_url: &str, mtls_url: &str, alg: SigningAlg) -> Value {
    let token = format!("{mtls_url}/token");
    let introspection = format!("{mtls_url}/introspect");
    let revocation = format!("{mtls_url}/revoke");
    let auth_methods = ["tls_client_auth", "self_signed_tls_client_auth"];
    json!({
        "issuer": public_url,
        "jwks_uri": format!("{public_url}/jwks"),
        "token_endpoint": token,
        "introspection_endpoint": introspection,
        "revocation_endpoint": revocation,
        "mtls_endpoint_aliases": {
            "token_endpoint": token,
            "introspection_endpoint": introspection,
            "revocation_endpoint": revocation,
        },
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": Scope::ALL.map(Scope::as_str),
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "tls_client_certificate_bound_access_tokens": true,
        "access_token_signing_alg_values_supported": [alg.as_str()],
    })
}
