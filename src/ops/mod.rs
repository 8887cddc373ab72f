//! Operations: metrics, health and readiness, the OpenAPI document and its docs UI, served on
//! the plain-HTTP ops listener (keep it private).

pub mod openapi;

use std::collections::HashMap;

use actix_web::{HttpResponse, get, web};

use crate::app::AppState;

/// Process is up.
#[utoipa::path(tag = "ops", responses((status = 200, description = "The process is up")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Database, shared state and audit store reachable.
#[utoipa::path(tag = "ops", responses(
    (status = 200, description = "Ready to serve"),
    (status = 503, description = "A dependency is unreachable; the body names it")))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.store.ping().await.map_err(|e| e.to_string());
    let shared_state = state.state.ping().await.map_err(|e| e.to_string());
    let status = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    // Not ready exactly while requests are refused for the log: the database may answer a
    // ping and still not take a write (a full disk).
    let audit = if !state.audit.is_running() {
        Err("the audit writer has stopped".to_string())
    } else if let Some(cause) = state.audit.failing() {
        Err(format!("the audit log cannot be written: {cause}"))
    } else {
        database.clone()
    };
    let body = serde_json::json!({
        "database": status(&database),
        "state": status(&shared_state),
        "audit": status(&audit),
    });
    if database.is_ok() && shared_state.is_ok() && audit.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics.
#[utoipa::path(tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(certs) = state.store.client_certificates().await {
        let mut earliest: HashMap<String, i64> = HashMap::new();
        for (client, cert) in certs {
            let e = earliest.entry(client).or_insert(cert.not_after);
            *e = (*e).min(cert.not_after);
        }
        state.metrics.cert_expiry.reset();
        for (client, not_after) in earliest {
            state
                .metrics
                .cert_expiry
                .with_label_values(&[client.as_str()])
                .set(not_after as f64);
        }
    }
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// The OpenAPI document of every listener's endpoints.
#[utoipa::path(tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document")))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi::document())
}

/// The docs UI lives under `/docs/`; `/docs` is where people type it.
#[get("/docs")]
async fn docs_without_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
        .finish()
}

/// The ops listener's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    routes(&mut utoipa_actix_web::service_config::ServiceConfig::new(
        cfg,
    ));
}

/// The ops listener's route table; the docs UI is served but not documented.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(healthz)
        .service(readyz)
        .service(metrics_text)
        .service(openapi_json)
        .map(|cfg| {
            cfg.service(docs_without_slash).service(
                utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
                    .config(utoipa_swagger_ui::Config::new(["/openapi.json"])),
            )
        });
}
