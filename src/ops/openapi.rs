//! The OpenAPI document, collected from the route table (each handler's annotations, as the
//! listeners register it). `openapi/obgate.json` is
//! this document, and a test fails when the two differ.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use crate::oauth::token::Confirmation;
use crate::resources::consents::{
    AccountAccessConsentDetails, AccountAccessConsentRequest, Amount, CashAccount,
    DomesticInitiation, DomesticPaymentConsentDetails, DomesticPaymentConsentRequest,
    FundsConfirmationConsentDetails, FundsConfirmationConsentRequest, Links, Meta, Permission,
    RemittanceInformation,
};
use crate::routes::oauth::{
    IntrospectionResponse, OAuthErrorBody, ParRequest, ParResponse, TokenActionRequest,
    TokenRequest, TokenResponse,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "obgate",
        description = "Open Banking partner API gateway. TPP endpoints are on the mTLS listener \
            (a client certificate is required at the handshake) and take access tokens bound \
            to that certificate (RFC 8705). Discovery is also served on the public TLS listener; \
            health, metrics and this document on the ops listener.",
        license(name = "Apache-2.0")
    ),
    components(schemas(
        TokenRequest, TokenResponse, ParRequest, ParResponse, OAuthErrorBody, TokenActionRequest, IntrospectionResponse,
        Confirmation, AccountAccessConsentRequest, AccountAccessConsentDetails, Permission,
        DomesticPaymentConsentRequest, DomesticPaymentConsentDetails, DomesticInitiation, Amount,
        CashAccount, RemittanceInformation, FundsConfirmationConsentRequest,
        FundsConfirmationConsentDetails, Links, Meta,
    )),
    modifiers(&Security),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "mutual_tls",
            SecurityScheme::MutualTls {
                description: Some(
                    "Client certificate from a trusted TPP CA, required at the TLS handshake"
                        .into(),
                ),
                deprecated: None,
                extensions: None,
            },
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT bound to the client certificate (cnf.x5t#S256)")
                    .build(),
            ),
        );
    }
}

/// The document: what [`ApiDoc`] says of the API as a whole, and every route the listeners
/// register (`routes::mtls`, `routes::public`, `ops::routes`), as registered.
pub fn api() -> utoipa::openapi::OpenApi {
    let (_, doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::mtls)
        .configure(crate::routes::public)
        .configure(super::routes)
        .split_for_parts();
    doc
}

/// The routes that take an access token, as `(method, route template)`: the policy must have a
/// rule for each, and may name no other.
pub fn protected_routes() -> Vec<(String, String)> {
    let doc = api();
    let mut protected = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in operations(item) {
            let bearer = operation.security.iter().flatten().any(|requirement| {
                serde_json::to_value(requirement).is_ok_and(|v| v.get("bearer").is_some())
            });
            if bearer {
                protected.push((method.to_string(), path.clone()));
            }
        }
    }
    protected
}

/// A path's operations with their methods.
fn operations(
    item: &utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &utoipa::openapi::path::Operation)> {
    [
        ("GET", &item.get),
        ("POST", &item.post),
        ("PUT", &item.put),
        ("PATCH", &item.patch),
        ("DELETE", &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
}

/// Every documented route template with its methods: what a request for a known path with an
/// undeclared method is told it may use (`405` with `Allow`).
pub fn routes() -> Vec<(String, Vec<&'static str>)> {
    api()
        .paths
        .paths
        .iter()
        .map(|(path, item)| (path.clone(), operations(item).map(|(m, _)| m).collect()))
        .collect()
}

/// The document as committed in `openapi/obgate.json` (pretty JSON, trailing newline).
pub fn document() -> String {
    let mut text = api()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
