//! Discovery: RFC 8414 metadata (also at the OpenID path) and the JWK Set. Served on both TLS
//! listeners; the public one never asks for a certificate.

use actix_web::web::Data;
use actix_web::{HttpResponse, get};

use crate::app::AppState;

/// Authorization server metadata (RFC 8414), with `mtls_endpoint_aliases` (RFC 8705 §5).
#[utoipa::path(tag = "discovery",
    responses((status = 200, description = "RFC 8414 metadata", content_type = "application/json")))]
#[get("/.well-known/oauth-authorization-server")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn oauth_metadata(state: Data<AppState>) -> HttpResponse {
    json(state.metadata.clone())
}

/// The same metadata at the OpenID Connect discovery path.
#[utoipa::path(tag = "discovery",
    responses((status = 200, description = "Discovery metadata", content_type = "application/json")))]
#[get("/.well-known/openid-configuration")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn openid_metadata(state: Data<AppState>) -> HttpResponse {
    json(state.metadata.clone())
}

/// Token-signing keys (RFC 7517).
#[utoipa::path(tag = "discovery",
    responses((status = 200, description = "JWK Set", content_type = "application/json")))]
#[get("/jwks")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn jwks(state: Data<AppState>) -> HttpResponse {
    json(state.tokens.keys().ring().jwks().to_string())
}

fn json(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("cache-control", "public, max-age=300"))
        .body(body)
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(oauth_metadata)
        .service(openid_metadata)
        .service(jwks);
}
