//! Upstream mode: the policy sends a route's requests to a core-banking URL instead of the
//! sandbox bank. The upstream learns who is asking from headers the gateway sets after the
//! whole guard chain passed; it never sees the bearer token or the client certificate.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::web::Payload;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::AppState;
use super::consents::{IDEMPOTENCY_KEY, read_body};
use super::edge::{INTERACTION_ID, InteractionId};
use super::error::ApiError;
use super::guard::Authorized;
use crate::policy::Upstream;

pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("x-obgate-client-id");
pub const CONSENT_ID_HEADER: HeaderName = HeaderName::from_static("x-obgate-consent-id");
pub const PSU_ID_HEADER: HeaderName = HeaderName::from_static("x-obgate-psu-id");

/// Sends this request to `upstream` and relays its status, content type and body.
pub async fn forward(
    req: &HttpRequest,
    auth: &Authorized,
    upstream: &Upstream,
    payload: Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    let url = match req.query_string() {
        "" => format!("{}{}", upstream.url, req.path()),
        q => format!("{}{}?{q}", upstream.url, req.path()),
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let interaction = req
        .extensions()
        .get::<InteractionId>()
        .map(|i| i.0.clone())
        .unwrap_or_default();
    let mut out = state
        .upstream_http
        .request(method, &url)
        .timeout(std::time::Duration::from_secs(upstream.timeout_secs))
        .header(INTERACTION_ID.as_str(), interaction)
        .header(CLIENT_ID_HEADER.as_str(), auth.client.client_id.as_str());
    if let Some(consent) = &auth.consent {
        out = out.header(CONSENT_ID_HEADER.as_str(), consent.consent_id.as_str());
        if let Some(psu) = &consent.psu {
            out = out.header(PSU_ID_HEADER.as_str(), psu.as_str());
        }
    }
    for name in [header::CONTENT_TYPE, header::ACCEPT, IDEMPOTENCY_KEY] {
        if let Some(v) = req.headers().get(&name).and_then(|v| v.to_str().ok()) {
            out = out.header(name.as_str(), v);
        }
    }
    let res = out
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| ApiError::Upstream(format!("upstream {}: {e}", upstream.name)))?;
    let status = StatusCode::from_u16(res.status().as_u16())
        .map_err(|e| ApiError::Upstream(format!("upstream {}: {e}", upstream.name)))?;
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = res
        .bytes()
        .await
        .map_err(|e| ApiError::Upstream(format!("upstream {}: {e}", upstream.name)))?;
    Ok(HttpResponse::build(status)
        .content_type(content_type)
        .body(bytes))
}
