//! Middleware at the edge of each listener: the `x-fapi-interaction-id`, metrics, and on the
//! mTLS listener and the customer's pages the audit event, committed before the response may
//! leave.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use super::error::ob_body;
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, Subject};
use crate::clock;
use crate::registry::CertFacts;
use crate::resources::codes;
use crate::tls::{Listener, PeerIdentity};

pub const INTERACTION_ID: HeaderName = HeaderName::from_static("x-fapi-interaction-id");
/// Route label for requests that matched no route.
pub const UNMATCHED: &str = "(unmatched)";

/// Set on a response by whoever decided its outcome, read by the audit middleware.
#[derive(Clone, Copy, Debug)]
pub struct AuditNote {
    pub outcome: Outcome,
    pub reason: &'static str,
}

impl AuditNote {
    pub fn denied(reason: &'static str) -> Self {
        Self {
            outcome: Outcome::Denied,
            reason,
        }
    }
}

/// Set on a customer page shown to a visitor nobody knows yet (the connected-apps sign-in
/// form): nothing happened that an auditor could ask about, and nothing is kept for it, so an
/// unauthenticated peer cannot fill the audit log by asking for the form.
#[derive(Clone, Copy, Debug)]
pub struct AnonymousView;

/// Adds to what the request's audit event will say it concerned. Called only where a fact is
/// established (the guard, client authentication, the extractors, the grants' answers, the
/// customer's sign-in), so a handler cannot forget it.
pub(super) fn remember(req: &HttpRequest, f: impl FnOnce(&mut Subject)) {
    let mut ext = req.extensions_mut();
    if let Some(subject) = ext.get_mut::<Subject>() {
        f(subject);
    } else {
        let mut subject = Subject::default();
        f(&mut subject);
        ext.insert(subject);
    }
}

/// The interaction id of this request (echoed, or generated).
#[derive(Clone, Debug)]
pub struct InteractionId(pub String);

/// Echo a sensible `x-fapi-interaction-id`; otherwise make one (a UUID, as FAPI asks).
fn interaction_id(headers: &HeaderMap) -> String {
    headers
        .get(&INTERACTION_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

fn state_of(req: &ServiceRequest) -> Result<web::Data<AppState>, actix_web::Error> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| actix_web::error::ErrorInternalServerError("application state missing"))
}

/// Every request on every TLS listener: interaction id and metrics; on the mTLS listener the
/// audit event too, committed before the response may leave.
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let state = state_of(&req)?;
    let ts = state.clock.now();
    // Fail closed: a listener that did not say what it is gets audited like the mTLS one.
    // The customer's pages are audited too: sign-ins, decisions and refusals there matter as
    // much as the TPP's calls.
    let audited = req
        .app_data::<Listener>()
        .is_none_or(|l| *l == Listener::Mtls)
        || is_customer_page(req.path());
    let interaction = interaction_id(req.headers());
    req.extensions_mut()
        .insert(InteractionId(interaction.clone()));
    let peer_ip = req.peer_addr().map(|a| a.ip());
    let method = req.method().to_string();

    // Handlers and extractors turn their errors into responses before this point; only a fault
    // inside actix itself could surface here, and then no response is sent at all.
    let res = next.call(req).await?.map_into_boxed_body();

    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED.to_string());
    let anonymous_view = res.response().extensions().contains::<AnonymousView>();
    let res = if audited && !anonymous_view {
        let event = event_for(&res, &interaction, peer_ip, &method, &route, ts, started);
        withhold_unless_recorded(res, event, &state).await
    } else {
        res
    };
    Ok(finish(res, &interaction, &route, &method, started, &state))
}

fn event_for<B>(
    res: &ServiceResponse<B>,
    interaction: &str,
    peer_ip: Option<std::net::IpAddr>,
    method: &str,
    route: &str,
    ts: time::OffsetDateTime,
    started: Instant,
) -> AuditEvent {
    let status = res.status();
    let note = res.response().extensions().get::<AuditNote>().copied();
    let ctx = res
        .request()
        .extensions()
        .get::<Subject>()
        .cloned()
        .unwrap_or_default();
    let cert = match PeerIdentity::of(res.request()) {
        PeerIdentity::Verified(c) => c.facts(),
        _ => CertFacts::default(),
    };
    let (outcome, reason) = match note {
        Some(n) => (n.outcome, Some(n.reason.to_string())),
        None if status.is_success() || status.is_redirection() => (Outcome::Allowed, None),
        None => (Outcome::Denied, Some(format!("http_{}", status.as_u16()))),
    };
    AuditEvent {
        ts: clock::timestamp(ts),
        interaction_id: interaction.to_string(),
        peer_ip,
        client_id: ctx.client_id,
        cert,
        method: method.to_string(),
        route: route.to_string(),
        status: status.as_u16(),
        outcome,
        reason,
        token_jti: ctx.token_jti,
        consent_id: ctx.consent_id,
        psu: ctx.psu,
        cert_previous: ctx.previous_cert,
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    }
}

/// The response leaves only if its audit event was durably committed; otherwise a 503 with
/// nothing of the original response in it.
async fn withhold_unless_recorded(
    res: ServiceResponse<BoxBody>,
    event: AuditEvent,
    state: &AppState,
) -> ServiceResponse<BoxBody> {
    match state.audit.record(event).await {
        Ok(_) => res,
        Err(e) => {
            let path = res.request().path();
            tracing::error!(error = %e, %path, "audit commit failed; the response is withheld");
            let (req, _) = res.into_parts();
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let body = ob_body(
                status,
                codes::UNEXPECTED,
                "the access log cannot be written; nothing was served",
                None,
            );
            ServiceResponse::new(req, HttpResponse::build(status).json(body))
        }
    }
}

/// Paths of the customer's pages on the public listener.
pub fn is_customer_page(path: &str) -> bool {
    path == "/authorize"
        || path.starts_with("/authorize/")
        || path == "/connected-apps"
        || path.starts_with("/connected-apps/")
}

/// The method as a metrics label: a fixed set, so odd methods cannot mint label series.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

fn finish(
    mut res: ServiceResponse<BoxBody>,
    interaction: &str,
    route: &str,
    method: &str,
    started: Instant,
    state: &AppState,
) -> ServiceResponse<BoxBody> {
    if let Ok(v) = HeaderValue::from_str(interaction) {
        res.headers_mut().insert(INTERACTION_ID, v);
    }
    state
        .metrics
        .http_requests
        .with_label_values(&[route, method_label(method), res.status().as_str()])
        .inc();
    state
        .metrics
        .http_duration
        .with_label_values(&[route, method_label(method)])
        .observe(started.elapsed().as_secs_f64());
    res
}
