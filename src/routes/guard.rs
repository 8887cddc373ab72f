//! The guard chain every resource request passes, in SPEC §5 order; the first failure is the
//! answer: verified client certificate → bearer JWT valid → `cnf.x5t#S256` equals this
//! connection's certificate → client active → policy permits role and scope on this route →
//! the consent behind the token is authorised, unexpired and grants this route's permission.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::edge::remember;
use super::error::ApiError;
use crate::app::AppState;
use crate::consent::{Kind, Status};
use crate::oauth::token::BoundToken;
use crate::policy::Permit;
use crate::registry::{Client, ClientStatus};
use crate::resources::codes;
use crate::resources::consents;
use crate::store::ConsentRecord;
use crate::tls::{PeerIdentity, VerifiedClientCert};

/// A request that passed the whole chain. Handlers that take it cannot run otherwise.
pub struct Authorized {
    pub cert: VerifiedClientCert,
    pub token: BoundToken,
    pub client: Client,
    pub permit: Permit,
    /// The usable consent behind the token, when the route's rule requires one.
    pub consent: Option<ConsentRecord>,
}

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authorize(&req).await })
    }
}

/// The verified certificate of this connection, still valid now, or the 401 that explains why
/// there is none.
pub fn client_cert(req: &HttpRequest, now: i64) -> Result<VerifiedClientCert, ApiError> {
    match PeerIdentity::of(req) {
        PeerIdentity::Verified(cert) => match cert.still_valid(now) {
            Ok(()) => Ok(cert),
            Err(why) => Err(ApiError::InvalidToken {
                reason: "certificate_stale",
                description: why.to_string(),
            }),
        },
        PeerIdentity::Absent => Err(ApiError::InvalidToken {
            reason: "certificate_missing",
            description: "no client certificate on this connection; use the mTLS endpoint".into(),
        }),
        PeerIdentity::Rejected(why) => Err(ApiError::InvalidToken {
            reason: "certificate_rejected",
            description: format!("the client certificate was not accepted: {why}"),
        }),
    }
}

fn bearer(req: &HttpRequest) -> Result<&str, ApiError> {
    let has_query_token = req
        .query_string()
        .split('&')
        .any(|p| p == "access_token" || p.starts_with("access_token="));
    if has_query_token {
        return Err(ApiError::BadRequest {
            reason: "token_in_query",
            code: codes::HEADER_INVALID,
            path: Some("access_token".into()),
            message: "access tokens are accepted only in the Authorization header, \
                      never in the URL"
                .into(),
            bearer_invalid_request: true,
        });
    }
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::NoToken(
            "an Authorization: Bearer access token is required",
        ))?;
    let value = value.to_str().map_err(|_| ApiError::InvalidToken {
        reason: "token_malformed",
        description: "the Authorization header is not valid text".into(),
    })?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::InvalidToken {
            reason: "token_malformed",
            description: "the Authorization header must be `Bearer <access token>`".into(),
        }),
    }
}

/// Counts this request against the client's per-minute limit from the policy, across every
/// instance (the counter lives in shared state).
pub async fn within_rate_limit(state: &AppState, client: &Client) -> Result<(), ApiError> {
    let Some(limit) = state.policy.load().rate_limit(client.client_id.as_str()) else {
        return Ok(());
    };
    let now = state.clock.now().unix_timestamp();
    let window_end = now - now.rem_euclid(60) + 60;
    let count = state
        .state
        .incr(
            &format!("rate:{}:{window_end}", client.client_id),
            window_end,
            now,
        )
        .await
        .map_err(|e| ApiError::Unavailable {
            backend: super::error::Backend::SharedState,
            cause: e.to_string(),
        })?;
    if count > u64::from(limit) {
        return Err(ApiError::RateLimited {
            limit,
            retry_after: window_end - now,
        });
    }
    Ok(())
}

#[tracing::instrument(name = "guard", skip_all)]
async fn authorize(req: &HttpRequest) -> Result<Authorized, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let now = state.clock.unix();
    let cert = client_cert(req, now)?;
    let raw = bearer(req)?;
    let token = match state
        .tokens
        .verify_bound(raw, &cert, &state.state, now)
        .await
    {
        Ok(t) => t,
        Err(rejection) => {
            // Which token was refused, but not whose: the presenter has not proven to be that
            // client (the certificate fields of the event say who presented it).
            if let Some(signed) = rejection.signed() {
                remember(req, |ctx| ctx.token_jti = Some(signed.jti.clone()));
            }
            state
                .metrics
                .token_rejections
                .with_label_values(&[rejection.reason()])
                .inc();
            return Err(rejection.into());
        }
    };
    remember(req, |ctx| {
        ctx.client_id = Some(token.client_id().to_string());
        ctx.token_jti = Some(token.jti().to_string());
        ctx.consent_id = token.consent_id().map(str::to_string);
    });
    let client = state
        .store
        .client(token.client_id())
        .await?
        .ok_or_else(|| ApiError::InvalidToken {
            reason: "client_unknown",
            description: format!("client {} is no longer registered", token.client_id()),
        })?;
    if let Some(why) = client.status.refusal() {
        let reason = match client.status {
            ClientStatus::Deleted => "client_deleted",
            ClientStatus::Pending => "client_pending",
            _ => "client_suspended",
        };
        state
            .metrics
            .token_rejections
            .with_label_values(&[reason])
            .inc();
        return Err(ApiError::InvalidToken {
            reason,
            description: format!("client {} {why}", client.client_id),
        });
    }
    within_rate_limit(state, &client).await?;
    let route = req.match_pattern().unwrap_or_default();
    let permit =
        state
            .policy
            .load()
            .decide(&client.roles, token.scopes(), req.method().as_str(), &route)?;
    // A token issued for a consent is refused on every route once that consent is withdrawn
    // or expired, not only on the routes that read through it.
    let consent = match (permit.consent(), token.consent_id()) {
        (None, None) => None,
        (rule, _) => Some(consent_for(state, &token, &client, rule).await?),
    };
    // A request let through to a consent named in its path concerned that consent.
    if let Some(id) = req.match_info().get("ConsentId") {
        remember(req, |s| s.consent_id = Some(id.to_string()));
    }
    Ok(Authorized {
        cert,
        token,
        client,
        permit,
        consent,
    })
}

/// SPEC §5, last step: the consent behind the token is this client's, authorised and
/// unexpired; where the route names a consent rule, also of its kind and granting one of its
/// permissions.
async fn consent_for(
    state: &AppState,
    token: &BoundToken,
    client: &Client,
    rule: Option<&crate::policy::ConsentRule>,
) -> Result<ConsentRecord, ApiError> {
    let forbidden = |reason: &'static str, message: String| ApiError::ConsentRefused {
        reason,
        code: codes::CONSENT_MISMATCH,
        message,
    };
    let consent_id = token.consent_id().ok_or_else(|| {
        forbidden(
            "consent_missing",
            format!(
                "this route needs an access token issued for a customer's authorised {} \
                 consent (authorization_code grant); this token has no consent",
                rule.map_or("", |r| r.kind.as_str())
            ),
        )
    })?;
    let consent = state
        .store
        .consent(consent_id)
        .await?
        .filter(|c| c.client_id == client.client_id.as_str())
        .ok_or_else(|| {
            forbidden(
                "consent_unknown",
                format!("consent {consent_id} is unknown"),
            )
        })?;
    if let Some(rule) = rule
        && consent.kind != rule.kind
    {
        return Err(forbidden(
            "consent_wrong_kind",
            format!(
                "consent {consent_id} is a {} consent; this route needs a {} consent",
                consent.kind, rule.kind
            ),
        ));
    }
    // A consumed payment consent still reaches the payment route, where an idempotent repeat
    // gets its first answer and anything else is refused as a second payment.
    let consumed_payment =
        consent.kind == Kind::DomesticPayment && consent.status == Status::Consumed;
    if !consumed_payment && let Err(e) = consent.usable(state.clock.now()) {
        return Err(ApiError::ConsentRefused {
            reason: e.reason(),
            code: codes::CONSENT_NOT_AUTHORISED,
            message: e.to_string(),
        });
    }
    if let Some(rule) = rule.filter(|r| !r.any_of.is_empty()) {
        let granted = consents::granted_permissions(&consent);
        if !rule.any_of.iter().any(|p| granted.contains(p)) {
            return Err(forbidden(
                "consent_permission_missing",
                format!(
                    "consent {consent_id} does not grant {}",
                    rule.any_of
                        .iter()
                        .map(|p| format!("{p:?}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
    }
    Ok(consent)
}
