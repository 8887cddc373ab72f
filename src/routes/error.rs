//! The one edge error: every layer's error converts into it, and it knows its HTTP status, its
//! body (RFC 6749 JSON at the authorization server, the Open Banking error body at resources)
//! and its `WWW-Authenticate` header.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::ServedOn;
use super::edge::AuditNote;
use crate::oauth::OAuthError;
use crate::oauth::token::TokenRejection;
use crate::policy::Denied;
use crate::resources::{ResourceError, codes};
use crate::store::StoreError;
use crate::tls::Listener;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authorization-server endpoints: RFC 6749 §5.2 body.
    #[error("{}: {}", .0, .0.description())]
    OAuth(OAuthError),
    /// No usable bearer token was presented (RFC 6750 §3.1: no error code).
    #[error("{0}")]
    NoToken(&'static str),
    /// The certificate or token is not acceptable: 401 `invalid_token`.
    #[error("{description}")]
    InvalidToken {
        reason: &'static str,
        description: String,
    },
    /// The policy refused: 403.
    #[error("{0}")]
    Forbidden(Denied),
    /// The caller's certificate does not carry the operator role the route needs: 403.
    #[error("{0}")]
    OperatorRoleMissing(String),
    /// The consent behind the token does not allow this request: 403 with an OB error.
    #[error("{message}")]
    ConsentRefused {
        reason: &'static str,
        code: &'static str,
        message: String,
    },
    /// The upstream core-banking system failed or could not be reached: 502.
    #[error("{0}")]
    Upstream(String),
    /// The request is malformed: 400 with an Open Banking error.
    #[error("{message}")]
    BadRequest {
        reason: &'static str,
        code: &'static str,
        path: Option<String>,
        message: String,
        /// RFC 6750 `invalid_request` in `WWW-Authenticate` (e.g. a token in the query string).
        bearer_invalid_request: bool,
    },
    #[error("{0}")]
    NotFound(String),
    /// The resource's state does not allow the request (a lifecycle move from the wrong
    /// status): 409.
    #[error("{0}")]
    Conflict(String),
    /// A known route asked with a method it does not declare: 405 with `Allow`.
    #[error("{method} is not allowed here; this resource accepts {allow}")]
    MethodNotAllowed { method: String, allow: String },
    /// The body is over the route's limit: 413, unread.
    #[error("{0}")]
    TooLarge(String),
    /// The client has used its requests for this minute: 429 with `Retry-After`.
    #[error("rate limit of {limit} requests per minute reached; retry in {retry_after} s")]
    RateLimited { limit: u32, retry_after: i64 },
    /// A backend the request needs is unreachable: 503, nothing served.
    #[error("{}: {cause}", backend.name())]
    Unavailable { backend: Backend, cause: String },
    /// Something of ours failed; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(
        reason: &'static str,
        code: &'static str,
        path: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::BadRequest {
            reason,
            code,
            path: path.map(str::to_string),
            message: message.into(),
            bearer_invalid_request: false,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::OAuth(e) => match e {
                OAuthError::InvalidRequest(_) => "invalid_request",
                OAuthError::InvalidClient(_) => "invalid_client",
                OAuthError::InvalidGrant(_) => "invalid_grant",
                OAuthError::UnauthorizedClient(_) => "unauthorized_client",
                OAuthError::InvalidScope(_) => "invalid_scope",
                OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
                OAuthError::UnsupportedResponseType(_) => "unsupported_response_type",
                OAuthError::InvalidRequestObject(_) => "invalid_request_object",
                OAuthError::ServerError(_) => "server_error",
                OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
            },
            Self::NoToken(_) => "token_missing",
            Self::InvalidToken { reason, .. } => reason,
            Self::Forbidden(d) => d.reason(),
            Self::OperatorRoleMissing(_) => "operator_role_missing",
            Self::ConsentRefused { reason, .. } => reason,
            Self::Upstream(_) => "upstream_failed",
            Self::Unavailable { backend, .. } => backend.reason(),
            Self::RateLimited { .. } => "rate_limited",
            Self::BadRequest { reason, .. } => reason,
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::TooLarge(_) => "body_too_large",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(e)
    }
}

impl From<TokenRejection> for ApiError {
    fn from(e: TokenRejection) -> Self {
        if e == TokenRejection::StateUnavailable {
            return Self::Unavailable {
                backend: Backend::SharedState,
                cause: e.to_string(),
            };
        }
        Self::InvalidToken {
            reason: e.reason(),
            description: e.to_string(),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        Self::Forbidden(e)
    }
}

/// The backends a request can find unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    SharedState,
    Database,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::SharedState => "shared state",
            Self::Database => "database",
        }
    }
    fn reason(self) -> &'static str {
        match self {
            Self::SharedState => "state_unavailable",
            Self::Database => "database_unavailable",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            return Self::Unavailable {
                backend: Backend::Database,
                cause: e.to_string(),
            };
        }
        Self::Internal(e.to_string())
    }
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> Self {
        match e {
            ResourceError::Field {
                code,
                path,
                message,
            } => Self::BadRequest {
                reason: "invalid_body",
                code,
                path: Some(path),
                message,
                bearer_invalid_request: false,
            },
            ResourceError::IdempotencyMismatch(_) => Self::bad_request(
                "idempotency_key_reused",
                codes::HEADER_INVALID,
                Some("x-idempotency-key"),
                e.to_string(),
            ),
            ResourceError::NotFound(m) => Self::NotFound(m),
            ResourceError::Forbidden {
                reason,
                code,
                message,
            } => Self::ConsentRefused {
                reason,
                code,
                message,
            },
            ResourceError::Store(s) => s.into(),
            ResourceError::UpstreamUnreadable(cause) => Self::Upstream(cause),
            ResourceError::Unavailable(cause) => Self::Unavailable {
                backend: Backend::SharedState,
                cause,
            },
        }
    }
}

/// RFC 6750 §3: quoted-string values may not contain `"` or `\`.
fn quote_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect()
}

pub(crate) fn ob_body(
    status: StatusCode,
    code: &str,
    message: &str,
    path: Option<&str>,
) -> serde_json::Value {
    let mut error = json!({"ErrorCode": code, "Message": message});
    if let Some(p) = path {
        error["Path"] = json!(p);
    }
    json!({
        "Code": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")).trim_end(),
        "Id": uuid::Uuid::new_v4().to_string(),
        "Message": message,
        "Errors": [error],
    })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::OAuth(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            Self::NoToken(_) | Self::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::ConsentRefused { .. } | Self::OperatorRoleMissing(_) => {
                StatusCode::FORBIDDEN
            }
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let mut res = HttpResponse::build(status);
        let (body, www_authenticate) = match self {
            Self::OAuth(e) => {
                res.insert_header((header::CACHE_CONTROL, "no-store"));
                let description = match e {
                    // Our own failure: the cause is for the log, not the caller.
                    OAuthError::ServerError(cause) => {
                        tracing::error!(%cause, "request failed");
                        "internal error; see the gateway log"
                    }
                    _ => e.description(),
                };
                (
                    json!({"error": e.to_string(), "error_description": description}),
                    None,
                )
            }
            Self::NoToken(m) => (
                ob_body(status, codes::HEADER_MISSING, m, Some("Authorization")),
                Some(r#"Bearer realm="obgate""#.to_string()),
            ),
            Self::InvalidToken { description, .. } => (
                ob_body(
                    status,
                    codes::HEADER_INVALID,
                    description,
                    Some("Authorization"),
                ),
                Some(format!(
                    r#"Bearer realm="obgate", error="invalid_token", error_description="{}""#,
                    quote_safe(description)
                )),
            ),
            Self::Forbidden(d) => {
                let www = match d {
                    Denied::ScopeMissing(scope) => Some(format!(
                        r#"Bearer realm="obgate", error="insufficient_scope", scope="{scope}", error_description="{}""#,
                        quote_safe(&d.to_string())
                    )),
                    _ => None,
                };
                (
                    ob_body(
                        status,
                        codes::HEADER_INVALID,
                        &d.to_string(),
                        Some("Authorization"),
                    ),
                    www,
                )
            }
            Self::BadRequest {
                code,
                path,
                message,
                bearer_invalid_request,
                ..
            } => (
                ob_body(status, code, message, path.as_deref()),
                bearer_invalid_request.then(|| {
                    format!(
                        r#"Bearer realm="obgate", error="invalid_request", error_description="{}""#,
                        quote_safe(message)
                    )
                }),
            ),
            Self::ConsentRefused { code, message, .. } => {
                (ob_body(status, code, message, None), None)
            }
            Self::OperatorRoleMissing(message) => {
                (ob_body(status, codes::HEADER_INVALID, message, None), None)
            }
            Self::Upstream(cause) => {
                tracing::error!(%cause, "upstream request failed");
                (
                    ob_body(
                        status,
                        codes::UNEXPECTED,
                        "the bank's core system did not answer; try again later",
                        None,
                    ),
                    None,
                )
            }
            Self::RateLimited { retry_after, .. } => {
                res.insert_header((header::RETRY_AFTER, retry_after.to_string()));
                (
                    ob_body(status, codes::RATE_LIMITED, &self.to_string(), None),
                    None,
                )
            }
            Self::Unavailable { backend, cause } => {
                tracing::error!(%cause, backend = backend.name(), "a backend is unavailable");
                res.insert_header((header::RETRY_AFTER, "1"));
                (
                    ob_body(
                        status,
                        codes::UNEXPECTED,
                        &format!(
                            "the gateway's {} is unavailable; nothing was served, retry shortly",
                            backend.name()
                        ),
                        None,
                    ),
                    None,
                )
            }
            Self::NotFound(m) => (ob_body(status, codes::NOT_FOUND, m, None), None),
            Self::Conflict(m) => (ob_body(status, codes::FIELD_INVALID, m, None), None),
            Self::MethodNotAllowed { allow, .. } => {
                res.insert_header((header::ALLOW, allow.as_str()));
                (
                    ob_body(status, codes::INVALID_FORMAT, &self.to_string(), None),
                    None,
                )
            }
            Self::TooLarge(m) => (ob_body(status, codes::INVALID_FORMAT, m, None), None),
            Self::Internal(cause) => {
                tracing::error!(%cause, "request failed");
                (
                    ob_body(
                        status,
                        codes::UNEXPECTED,
                        "internal error; see the gateway log",
                        None,
                    ),
                    None,
                )
            }
        };
        if let Some(www) = www_authenticate
            && let Ok(v) = HeaderValue::from_str(&www)
        {
            res.insert_header((header::WWW_AUTHENTICATE, v));
        }
        let mut res = res.json(body);
        res.extensions_mut()
            .insert(AuditNote::denied(self.reason()));
        res
    }
}

/// Requests no handler took: a known route asked with a method it does not declare is `405`
/// with `Allow` (RFC 9110 §15.5.6; RFC 6749 §3.2 for `/token`); a route served on another
/// listener is named with its URL there; anything else is 404.
pub async fn not_found(
    req: actix_web::HttpRequest,
    state: actix_web::web::Data<crate::app::AppState>,
) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    let Some((template, methods)) = state.routes.lookup(path) else {
        return Err(ApiError::NotFound("no such resource".into()));
    };
    let here = req
        .app_data::<Listener>()
        .copied()
        .unwrap_or(Listener::Mtls);
    let served = ServedOn::of(template);
    if served.includes(here) {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allow: methods.join(", "),
        });
    }
    let server = &state.settings.server;
    Err(ApiError::NotFound(match served {
        ServedOn::Mtls => format!(
            "{path} is served on the mTLS listener, with a client certificate: {}{path}",
            server.mtls_url
        ),
        ServedOn::Public => format!(
            "{path} is served on the public listener: {}{path}",
            server.public_url
        ),
        ServedOn::BothTls | ServedOn::Ops => format!(
            "{path} is served on the ops listener ({}), not here",
            server.ops_listen
        ),
    }))
}
