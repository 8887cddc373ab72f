//! The OpenAPI document, generated from the handlers' annotations. `openapi/obgate.json` is
//! this document, and a test fails when the two differ.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    paths(
        crate::routes::oauth::token,
        crate::routes::oauth::par,
        crate::routes::oauth::introspect,
        crate::routes::oauth::revoke,
        crate::routes::discovery::oauth_metadata,
        crate::routes::discovery::openid_metadata,
        crate::routes::discovery::jwks,
        crate::routes::consents::create_account_access_consent,
        crate::routes::consents::get_account_access_consent,
        crate::routes::consents::delete_account_access_consent,
        crate::routes::consents::create_domestic_payment_consent,
        crate::routes::consents::get_domestic_payment_consent,
        crate::routes::consents::create_funds_confirmation_consent,
        crate::routes::consents::get_funds_confirmation_consent,
        crate::routes::banking::list_accounts,
        crate::routes::banking::get_account,
        crate::routes::banking::get_balances,
        crate::routes::banking::get_transactions,
        crate::routes::banking::create_payment,
        crate::routes::banking::get_payment,
        crate::routes::banking::confirm_funds,
        crate::routes::authorize::authorize,
        crate::routes::authorize::authorize_login,
        crate::routes::authorize::authorize_decision,
        crate::routes::connected_apps::connected_apps,
        crate::routes::connected_apps::connected_apps_login,
        crate::routes::connected_apps::connected_apps_revoke,
        crate::routes::connected_apps::connected_apps_logout,
        crate::ops::healthz,
        crate::ops::readyz,
        crate::ops::metrics_text,
        crate::ops::openapi_json,
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

pub fn api() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Every documented route template with its methods: what a request for a known path with an
/// undeclared method is told it may use (`405` with `Allow`).
pub fn routes() -> Vec<(String, Vec<&'static str>)> {
    api()
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ]
            .into_iter()
            .filter_map(|(m, declared)| declared.then_some(m))
            .collect();
            (path.clone(), methods)
        })
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
