//! Upstream mode: the policy sends a route's requests to a core-banking URL instead of the
//! sandbox bank. Every check the sandbox path makes is made before the request leaves (the
//! account is in the consent; a payment repeats its consent and pays once; a funds
//! confirmation names its consent), by the same functions in `resources`; an account read's
//! answer is cut down to what the consent grants before the TPP sees it. The upstream learns
//! who is asking from headers the gateway sets, and never sees the bearer token or the client
//! certificate.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};

use super::consents::IDEMPOTENCY_KEY;
use super::edge::{INTERACTION_ID, InteractionId};
use super::error::ApiError;
use super::guard::Authorized;
use crate::app::AppState;
use crate::policy::Upstream;
use crate::resources::accounts::{self, AccountRead};
use crate::resources::codes;

pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("x-obgate-client-id");
pub const CONSENT_ID_HEADER: HeaderName = HeaderName::from_static("x-obgate-consent-id");
pub const PSU_ID_HEADER: HeaderName = HeaderName::from_static("x-obgate-psu-id");
pub const ACCOUNT_IDS_HEADER: HeaderName = HeaderName::from_static("x-obgate-account-ids");

/// True for `.`/`..` path segments, also percent-encoded: URL parsers resolve them, which
/// would send the request to another path on the upstream than the one the policy checked.
fn dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

/// What the upstream answered.
struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn relay(self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type(self.content_type)
            .body(self.body)
    }
}

/// Sends this request (its `body` already read) to `upstream` and relays its status, content
/// type and body.
pub async fn forward(
    req: &HttpRequest,
    auth: &Authorized,
    upstream: &Upstream,
    body: Bytes,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    Ok(send(req, auth, upstream, body, state).await?.relay())
}

/// Sends an account read to `upstream`; a successful answer reaches the TPP only as far as
/// the consent grants it ([`accounts::restrict_upstream`]), an error answer as it came.
pub async fn forward_account_read(
    req: &HttpRequest,
    auth: &Authorized,
    upstream: &Upstream,
    body: Bytes,
    state: &AppState,
    read: AccountRead,
) -> Result<HttpResponse, ApiError> {
    let consent = auth.consent.as_ref().ok_or_else(|| {
        ApiError::Internal("an account read reached the upstream without a consent".into())
    })?;
    let answer = send(req, auth, upstream, body, state).await?;
    if !answer.status.is_success() {
        return Ok(answer.relay());
    }
    let account_id = req.match_info().get("AccountId");
    let value = accounts::restrict_upstream(consent, read, account_id, &answer.body)?;
    Ok(HttpResponse::build(answer.status).json(value))
}

async fn send(
    req: &HttpRequest,
    auth: &Authorized,
    upstream: &Upstream,
    body: Bytes,
    state: &AppState,
) -> Result<Answer, ApiError> {
    if req.path().split('/').any(dot_segment) {
        return Err(ApiError::bad_request(
            "path_dot_segment",
            codes::FIELD_INVALID,
            None,
            "path segments . and .. are not allowed",
        ));
    }
    if let (Some(consent), Some(account_id)) = (&auth.consent, req.match_info().get("AccountId")) {
        accounts::consented_account(&state.store, consent, account_id).await?;
    }
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
        out = out
            .header(CONSENT_ID_HEADER.as_str(), consent.consent_id.as_str())
            .header(ACCOUNT_IDS_HEADER.as_str(), consent.account_ids.0.join(","));
        if let Some(psu) = &consent.psu {
            out = out.header(PSU_ID_HEADER.as_str(), psu.as_str());
        }
    }
    for name in [header::CONTENT_TYPE, header::ACCEPT, IDEMPOTENCY_KEY] {
        if let Some(v) = req.headers().get(&name).and_then(|v| v.to_str().ok()) {
            out = out.header(name.as_str(), v);
        }
    }
    let failed =
        |e: &dyn std::fmt::Display| ApiError::Upstream(format!("upstream {}: {e}", upstream.name));
    let res = out
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| failed(&e))?;
    let status = StatusCode::from_u16(res.status().as_u16()).map_err(|e| failed(&e))?;
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = res.bytes().await.map_err(|e| failed(&e))?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_recognised_in_any_spelling() {
        for s in [".", "..", "%2e", "%2E%2e", ".%2E", "%2e."] {
            assert!(dot_segment(s), "{s}");
        }
        for s in ["", "acc-1", "...", "a.b", "%2f"] {
            assert!(!dot_segment(s), "{s}");
        }
    }
}
