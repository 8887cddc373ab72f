//! What the customer's pages share: the session (a random `__Host-` cookie naming
//! server-side state that holds the CSRF token every form must echo; none for a visitor not
//! yet signed in), form reading, the sign-in check, and the page an error becomes.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::edge::{AuditNote, remember};
use super::pages::{self};
use crate::app::AppState;
use crate::oauth::authorize::{AuthorizationRequest, digest, random_token, redirect_to};
use crate::registry::ClientId;
use crate::resources::decision::Refusal;
use crate::resources::signin::{self, SignInError};
pub(super) const SESSION_COOKIE: &str = "__Host-obgate-session";
/// The connected-apps sign-in form's CSRF token, for visitors who have no session yet.
pub(super) const CSRF_COOKIE: &str = "__Host-obgate-csrf";
/// A customer session lasts ten minutes: long enough to sign in and decide.
pub(super) const SESSION_LIFETIME: i64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Session {
    pub(super) csrf: String,
    pub(super) psu: Option<String>,
    /// When the customer signed in (OIDC `auth_time`).
    #[serde(default)]
    pub(super) signed_in_at: i64,
    /// The authorization request being decided, taken from its `request_uri`.
    pub(super) request: Option<AuthorizationRequest>,
}

/// What went wrong, as the customer sees it (never a redirect: the redirect URI may not be
/// trusted yet).
pub(super) struct PageError {
    pub(super) status: StatusCode,
    pub(super) reason: &'static str,
    pub(super) message: String,
    /// Set once the pushed request is known: the client hears of the failure instead.
    pub(super) redirect: Option<String>,
}

pub(super) fn page_error(status: StatusCode, reason: &'static str, message: String) -> PageError {
    PageError {
        status,
        reason,
        message,
        redirect: None,
    }
}

impl PageError {
    /// Once the pushed request is resolved, its redirect URI is trusted (checked at /par), so a
    /// dead end for the customer becomes an OAuth error for the client (RFC 6749 §4.1.2.1),
    /// with `state` and `iss`. Temporary failures stay pages: the customer may retry.
    pub(super) fn for_client(self, request: &AuthorizationRequest, issuer: &str) -> Self {
        if self.status.is_server_error() {
            return self;
        }
        let code = match self.reason {
            "no_eligible_account" | "account_not_requested" => "access_denied",
            _ => "invalid_request",
        };
        let redirect = Some(redirect_to(request, issuer, Err((code, &self.message))));
        Self { redirect, ..self }
    }
}

pub(super) type PageResult = Result<HttpResponse, PageError>;

impl From<PageError> for HttpResponse {
    fn from(e: PageError) -> Self {
        let mut res = match &e.redirect {
            Some(location) => see_other(location),
            None => pages::error(e.status, &e.message),
        };
        res.extensions_mut().insert(AuditNote::denied(e.reason));
        res
    }
}

pub(super) fn broken(e: impl std::fmt::Display) -> PageError {
    tracing::error!(error = %e, "customer page failed");
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "internal_error",
        "The bank could not complete this step. Please try again shortly.".into(),
    )
}

pub(super) fn bad(reason: &'static str, msg: &str) -> PageError {
    page_error(StatusCode::BAD_REQUEST, reason, msg.to_string())
}

/// The customer this session signed in, recorded as whom the request concerned; `refusal`
/// is shown to a session nobody signed in to.
pub(super) fn signed_in(
    req: &HttpRequest,
    session: &Session,
    refusal: &str,
) -> Result<String, PageError> {
    let psu = session
        .psu
        .clone()
        .ok_or_else(|| bad("not_signed_in", refusal))?;
    remember(req, |s| s.psu = Some(psu.clone()));
    Ok(psu)
}

pub(super) fn session_key(id: &str) -> String {
    format!("session:{}", digest(id))
}

pub(super) async fn load_session(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<(String, Session)>, PageError> {
    let Some(id) = req.cookie(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    let now = state.clock.now().unix_timestamp();
    let Some(text) = state
        .state
        .get(&session_key(&id), now)
        .await
        .map_err(broken)?
    else {
        return Ok(None);
    };
    let session = serde_json::from_str(&text).map_err(broken)?;
    Ok(Some((id, session)))
}

pub(super) async fn save_session(state: &AppState, id: &str, s: &Session) -> Result<(), PageError> {
    let text = serde_json::to_string(s).map_err(broken)?;
    let now = state.clock.now().unix_timestamp();
    state
        .state
        .put(&session_key(id), &text, now + SESSION_LIFETIME, now)
        .await
        .map_err(broken)
}

pub(super) async fn new_session(
    state: &AppState,
    s: &Session,
) -> Result<(String, Cookie<'static>), PageError> {
    let id = random_token().map_err(broken)?;
    save_session(state, &id, s).await?;
    let cookie = Cookie::build(SESSION_COOKIE, id.clone())
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(SESSION_LIFETIME))
        .finish();
    Ok((id, cookie))
}

/// Form fields, repeated ones kept (the account choices).
pub(super) fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| bad("form_malformed", "The form could not be read."))
}

pub(super) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The session named by the cookie, if the form echoes its CSRF token.
pub(super) async fn checked_session(
    req: &HttpRequest,
    state: &AppState,
    fields: &[(String, String)],
) -> Result<(String, Session), PageError> {
    let (id, session) = load_session(req, state).await?.ok_or_else(|| {
        page_error(
            StatusCode::BAD_REQUEST,
            "session_expired",
            "Your session has expired. Go back to the app and start again.".into(),
        )
    })?;
    csrf_echoed(fields, &session.csrf)?;
    Ok((id, session))
}

/// The form's `csrf` field is `expected` (compared in constant time, over digests so lengths
/// tell nothing either); an empty token never matches.
pub(super) fn csrf_echoed(fields: &[(String, String)], expected: &str) -> Result<(), PageError> {
    let sent = field(fields, "csrf").unwrap_or_default();
    if sent.is_empty() || !openssl::memcmp::eq(digest(sent).as_bytes(), digest(expected).as_bytes())
    {
        return Err(page_error(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "This form was not sent from this bank's page (CSRF check failed). Open the page \
             again."
                .into(),
        ));
    }
    Ok(())
}

/// A refused sign-in, as the page shows it.
pub(super) struct SignInRefusal {
    pub(super) status: StatusCode,
    pub(super) reason: &'static str,
    pub(super) message: &'static str,
}

/// The sign-in form's check (resources::signin), its refusals as the page shows them.
pub(super) async fn check_sign_in(
    req: &HttpRequest,
    state: &AppState,
    fields: &[(String, String)],
) -> Result<Result<String, SignInRefusal>, PageError> {
    let username = field(fields, "username").unwrap_or_default();
    let password = field(fields, "password").unwrap_or_default();
    remember(req, |ctx| {
        ctx.psu = Some(username.chars().take(64).collect())
    });
    let attempt = signin::Attempt {
        peer: req.peer_addr().map(|a| a.ip()),
        username,
        password,
        now: state.clock.unix(),
    };
    let refused = |status, reason, message| {
        Ok(Err(SignInRefusal {
            status,
            reason,
            message,
        }))
    };
    match signin::sign_in(&state.state, &state.store, &state.password_checks, attempt).await {
        Ok(psu) => Ok(Ok(psu)),
        Err(SignInError::PausedForPeer) => refused(
            StatusCode::TOO_MANY_REQUESTS,
            "login_paused_for_peer",
            "Too many sign-in attempts from this address. Try again in 15 minutes.",
        ),
        Err(SignInError::Paused) => refused(
            StatusCode::TOO_MANY_REQUESTS,
            "login_paused",
            "Too many failed attempts for this username. Try again in 15 minutes.",
        ),
        Err(SignInError::WrongPassword) => refused(
            StatusCode::UNAUTHORIZED,
            "login_failed",
            "That username and password did not match. Try again.",
        ),
        Err(SignInError::Busy) => refused(
            StatusCode::TOO_MANY_REQUESTS,
            "login_busy",
            "A sign-in from this address is still being checked. Try again in a moment.",
        ),
        Err(e @ (SignInError::State(_) | SignInError::Store(_) | SignInError::Check(_))) => {
            Err(broken(e))
        }
    }
}

pub(super) async fn tpp_name(state: &AppState, client_id: &str) -> Result<String, PageError> {
    let id: ClientId = client_id.parse().map_err(broken)?;
    Ok(state
        .store
        .client(&id)
        .await
        .map_err(broken)?
        .map_or_else(|| client_id.to_string(), |c| c.name))
}

pub(super) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The customer's side of a refusal from the consent lifecycle, as a page.
pub(super) fn refused(r: Refusal) -> PageError {
    match r {
        Refusal::Unknown => bad(
            "consent_unknown",
            "The request names a consent this bank does not know.",
        ),
        Refusal::Expired => bad(
            "consent_expired",
            "This request has expired. Go back to the app and start again.",
        ),
        Refusal::AlreadyDecided(Some(status)) => bad(
            "consent_already_decided",
            &format!("This request has already been decided (it is {status})."),
        ),
        Refusal::AlreadyDecided(None) => bad(
            "consent_already_decided",
            "This request has already been decided.",
        ),
        Refusal::NotTheRequestedAccount => bad(
            "account_not_requested",
            "The account chosen is not the one the app asked for.",
        ),
        Refusal::NotTheCustomers => page_error(
            StatusCode::FORBIDDEN,
            "consent_not_the_customers",
            "That is not one of your connected apps.".into(),
        ),
        Refusal::AccountChoice { many: true } => bad(
            "accounts_not_chosen",
            "Choose at least one account to share.",
        ),
        Refusal::AccountChoice { many: false } => bad("accounts_not_chosen", "Choose one account."),
        e @ (Refusal::Corrupt(..) | Refusal::Store(_)) => broken(e),
    }
}
