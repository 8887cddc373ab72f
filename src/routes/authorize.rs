//! The customer's side of the flow, on the public listener (a browser is never asked for a
//! certificate): `/authorize` (pushed requests only), sign-in, the consent decision, and the
//! connected-apps page where a customer withdraws access.
//!
//! A customer session is a random cookie (`__Host-`, `Secure`, `HttpOnly`, `SameSite=Lax`)
//! naming server-side state that holds the CSRF token every form must echo.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::{StatusCode, header};
use actix_web::web::{Bytes, Data, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::edge::{AnonymousView, AuditNote, remember};
use super::pages::{self, AccountChoice, ConnectedApp, ConsentView};
use crate::audit::Outcome;
use crate::consent::{Kind, Status};
use crate::oauth::authorize::{
    AuthorizationRequest, IssuedCode, digest, random_token, redirect_to, request_uri_key,
};
use crate::oauth::grants::issue_code;
use crate::registry::{ClientId, ClientStatus};
use crate::resources::consents::{
    AccountAccessConsentDetails, DomesticPaymentConsentDetails, FundsConfirmationConsentDetails,
};
use crate::resources::decision::{self, Refusal};
use crate::resources::sandbox::format_minor;
use crate::resources::signin::{self, SignInError};
use crate::store::{AccountRecord, ConsentRecord};

const SESSION_COOKIE: &str = "__Host-obgate-session";
/// The connected-apps sign-in form's CSRF token, for visitors who have no session yet.
const CSRF_COOKIE: &str = "__Host-obgate-csrf";
/// A customer session lasts ten minutes: long enough to sign in and decide.
const SESSION_LIFETIME: i64 = 600;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    csrf: String,
    psu: Option<String>,
    /// When the customer signed in (OIDC `auth_time`).
    #[serde(default)]
    signed_in_at: i64,
    /// The authorization request being decided, taken from its `request_uri`.
    request: Option<AuthorizationRequest>,
}

/// What went wrong, as the customer sees it (never a redirect: the redirect URI may not be
/// trusted yet).
struct PageError {
    status: StatusCode,
    reason: &'static str,
    message: String,
    /// Set once the pushed request is known: the client hears of the failure instead.
    redirect: Option<String>,
}

fn page_error(status: StatusCode, reason: &'static str, message: String) -> PageError {
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
    fn for_client(self, request: &AuthorizationRequest, issuer: &str) -> Self {
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

type PageResult = Result<HttpResponse, PageError>;

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

fn broken(e: impl std::fmt::Display) -> PageError {
    tracing::error!(error = %e, "customer page failed");
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "internal_error",
        "The bank could not complete this step. Please try again shortly.".into(),
    )
}

fn bad(reason: &'static str, msg: &str) -> PageError {
    page_error(StatusCode::BAD_REQUEST, reason, msg.to_string())
}

fn session_key(id: &str) -> String {
    format!("session:{}", digest(id))
}

async fn load_session(
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

async fn save_session(state: &AppState, id: &str, s: &Session) -> Result<(), PageError> {
    let text = serde_json::to_string(s).map_err(broken)?;
    let now = state.clock.now().unix_timestamp();
    state
        .state
        .put(&session_key(id), &text, now + SESSION_LIFETIME, now)
        .await
        .map_err(broken)
}

async fn new_session(
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
fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| bad("form_malformed", "The form could not be read."))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The session named by the cookie, if the form echoes its CSRF token.
async fn checked_session(
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
    let sent = field(fields, "csrf").unwrap_or_default();
    if !openssl::memcmp::eq(digest(sent).as_bytes(), digest(&session.csrf).as_bytes())
        || sent.is_empty()
    {
        return Err(page_error(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "This form was not sent from this bank's page (CSRF check failed).".into(),
        ));
    }
    Ok((id, session))
}

#[derive(Deserialize)]
pub struct AuthorizeQuery {
    client_id: Option<String>,
    request_uri: Option<String>,
}

/// RFC 6749 §4.1.1 via RFC 9126 §4: only a pushed request, by its single-use `request_uri`.
#[utoipa::path(get, path = "/authorize", tag = "customer",
    params(("client_id" = String, Query), ("request_uri" = String, Query, description = "From /par")),
    responses(
        (status = 200, description = "Sign-in page (HTML)", content_type = "text/html"),
        (status = 400, description = "No pushed request, or it expired or was used (HTML)", content_type = "text/html")))]
#[get("/authorize")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn authorize(
    req: HttpRequest,
    query: Result<Query<AuthorizeQuery>, actix_web::Error>,
    state: Data<AppState>,
) -> HttpResponse {
    start(&req, query, &state).await.unwrap_or_else(Into::into)
}

/// Records whose request and which consent a customer page acted on.
fn note_request(req: &HttpRequest, request: &AuthorizationRequest) {
    remember(req, |ctx| {
        ctx.client_id = Some(request.client_id.clone());
        ctx.consent_id = Some(request.consent_id.clone());
    });
}

async fn start(
    req: &HttpRequest,
    query: Result<Query<AuthorizeQuery>, actix_web::Error>,
    state: &AppState,
) -> PageResult {
    let query = query.map_err(|_| bad("authorize_malformed", "This sign-in link is malformed."))?;
    let request_uri = query.request_uri.as_deref().ok_or_else(|| {
        bad(
            "par_required",
            "This bank accepts only pushed authorization requests: the link needs a request_uri \
             from /par (FAPI 2.0).",
        )
    })?;
    let now = state.clock.now().unix_timestamp();
    let stored = state
        .state
        .take(&request_uri_key(request_uri), now)
        .await
        .map_err(broken)?
        .ok_or_else(|| {
            bad(
                "request_uri_invalid",
                "This sign-in link has expired or has already been used. Go back to the app \
                 and start again.",
            )
        })?;
    let request: AuthorizationRequest = serde_json::from_str(&stored).map_err(broken)?;
    note_request(req, &request);
    if query.client_id.as_deref() != Some(request.client_id.as_str()) {
        return Err(bad(
            "client_id_mismatch",
            "The client_id of this link does not match the pushed request.",
        ));
    }
    let client_id: ClientId = request.client_id.parse().map_err(broken)?;
    let client = state
        .store
        .client(&client_id)
        .await
        .map_err(broken)?
        .filter(|c| c.status == ClientStatus::Active)
        .ok_or_else(|| {
            bad(
                "client_not_active",
                "The app asking for access is not allowed to connect.",
            )
        })?;
    let csrf = random_token().map_err(broken)?;
    let (_, cookie) = new_session(
        state,
        &Session {
            csrf: csrf.clone(),
            psu: None,
            signed_in_at: 0,
            request: Some(request),
        },
    )
    .await?;
    let mut res = pages::page(
        StatusCode::OK,
        "Sign in",
        &pages::login("/authorize/login", &csrf, Some(&client.name), None),
    );
    res.add_cookie(&cookie).map_err(broken)?;
    Ok(res)
}

#[utoipa::path(post, path = "/authorize/login", tag = "customer",
    responses((status = 200, description = "Consent page (HTML)", content_type = "text/html"),
        (status = 401, description = "Wrong username or password (HTML)", content_type = "text/html"),
        (status = 403, description = "CSRF check failed (HTML)", content_type = "text/html")))]
#[post("/authorize/login")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn authorize_login(req: HttpRequest, body: Bytes, state: Data<AppState>) -> HttpResponse {
    login_step(&req, &body, &state)
        .await
        .unwrap_or_else(Into::into)
}

async fn login_step(req: &HttpRequest, body: &[u8], state: &AppState) -> PageResult {
    let fields = form_fields(body)?;
    let (id, session) = checked_session(req, state, &fields).await?;
    let request = session.request.clone().ok_or_else(|| {
        bad(
            "no_pending_request",
            "There is no request to decide in this session.",
        )
    })?;
    note_request(req, &request);
    let name = tpp_name(state, &request.client_id).await?;
    match sign_in(req, state, &id, session, &fields, Some(&name)).await? {
        SignIn::Refused(res) => Ok(res),
        SignIn::Accepted(accepted) => {
            let (session, cookie) = *accepted;
            let issuer = &state.settings.server.public_url;
            let mut res = consent_page(state, &session, &request, None)
                .await
                .map_err(|e| e.for_client(&request, issuer))?;
            res.add_cookie(&cookie).map_err(broken)?;
            Ok(res)
        }
    }
}

/// A refused sign-in, as the page shows it.
struct SignInRefusal {
    status: StatusCode,
    reason: &'static str,
    message: &'static str,
}

/// The sign-in form's check (resources::signin), its refusals as the page shows them.
async fn check_sign_in(
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

enum SignIn {
    /// The page to show instead (wrong password, or paused), with a fresh CSRF token.
    Refused(HttpResponse),
    /// Signed in: a new session (new id, new CSRF token) and its cookie; the old one is gone.
    Accepted(Box<(Session, Cookie<'static>)>),
}

/// The sign-in form of a pending authorization (the session `id` holds the request): on
/// success a new session, so that nothing known before sign-in (session id, CSRF token) is
/// valid after it.
async fn sign_in(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    mut session: Session,
    fields: &[(String, String)],
    tpp: Option<&str>,
) -> Result<SignIn, PageError> {
    let username = match check_sign_in(req, state, fields).await? {
        Ok(username) => username,
        Err(refusal) => {
            session.csrf = random_token().map_err(broken)?;
            save_session(state, id, &session).await?;
            let mut res = pages::page(
                refusal.status,
                "Sign in",
                &pages::login(
                    "/authorize/login",
                    &session.csrf,
                    tpp,
                    Some(refusal.message),
                ),
            );
            res.extensions_mut()
                .insert(AuditNote::denied(refusal.reason));
            return Ok(SignIn::Refused(res));
        }
    };
    state.state.delete(&session_key(id)).await.map_err(broken)?;
    session.psu = Some(username);
    session.signed_in_at = state.clock.now().unix_timestamp();
    session.csrf = random_token().map_err(broken)?;
    let (_, cookie) = new_session(state, &session).await?;
    Ok(SignIn::Accepted(Box::new((session, cookie))))
}

async fn tpp_name(state: &AppState, client_id: &str) -> Result<String, PageError> {
    let id: ClientId = client_id.parse().map_err(broken)?;
    Ok(state
        .store
        .client(&id)
        .await
        .map_err(broken)?
        .map_or_else(|| client_id.to_string(), |c| c.name))
}

fn account_label(a: &AccountRecord) -> String {
    let number = a.identification.get(6..).unwrap_or(&a.identification);
    let last4 = number
        .get(number.len().saturating_sub(4)..)
        .unwrap_or(number);
    format!(
        "{} ({} {}, ending {last4}) – balance £{}",
        a.nickname,
        a.account_type,
        a.account_sub_type,
        format_minor(a.balance_minor)
    )
}

/// The consent page for the request in this signed-in session.
async fn consent_page(
    state: &AppState,
    session: &Session,
    request: &AuthorizationRequest,
    error: Option<String>,
) -> PageResult {
    let psu = session
        .psu
        .as_deref()
        .ok_or_else(|| bad("not_signed_in", "Sign in first."))?;
    let consent = pending_consent(state, request).await?;
    let tpp = tpp_name(state, &request.client_id).await?;
    let accounts = state.store.accounts_of(psu).await.map_err(broken)?;
    let customer = state
        .store
        .customer(psu)
        .await
        .map_err(broken)?
        .map_or_else(|| psu.to_string(), |c| c.display_name);
    let choices = |preselect: Option<&str>| -> Vec<AccountChoice> {
        accounts
            .iter()
            .filter(|a| preselect.is_none_or(|id| a.identification == id))
            .map(|a| AccountChoice {
                id: a.account_id.clone(),
                label: account_label(a),
                checked: preselect.is_some(),
            })
            .collect()
    };
    let view = match consent.kind {
        Kind::AccountAccess => {
            let d: AccountAccessConsentDetails =
                serde_json::from_str(&consent.data).map_err(broken)?;
            let mut items: Vec<String> = Vec::new();
            for p in &d.permissions {
                let line = p.describe().to_string();
                if !items.contains(&line) {
                    items.push(line);
                }
            }
            if let (Some(from), Some(to)) =
                (&d.transaction_from_date_time, &d.transaction_to_date_time)
            {
                items.push(format!("Transactions from {from} to {to}"));
            }
            ConsentView {
                tpp: &tpp,
                customer: &customer,
                csrf: &session.csrf,
                heading: format!("Share your account information with {tpp}?"),
                items,
                expiry: d.expiration_date_time,
                accounts: choices(None),
                many: true,
                account_legend: "Choose the accounts to share",
                error,
            }
        }
        Kind::DomesticPayment => {
            let d: DomesticPaymentConsentDetails =
                serde_json::from_str(&consent.data).map_err(broken)?;
            let i = &d.initiation;
            let amount = format!(
                "{} {}",
                i.instructed_amount.amount, i.instructed_amount.currency
            );
            let payee = i
                .creditor_account
                .name
                .clone()
                .unwrap_or_else(|| i.creditor_account.identification.clone());
            let mut items = vec![
                format!("A payment of {amount}"),
                format!(
                    "To {payee} ({} {})",
                    i.creditor_account.scheme_name, i.creditor_account.identification
                ),
            ];
            if let Some(r) = i
                .remittance_information
                .as_ref()
                .and_then(|r| r.reference.as_ref())
            {
                items.push(format!("Reference: {r}"));
            }
            ConsentView {
                tpp: &tpp,
                customer: &customer,
                csrf: &session.csrf,
                heading: format!("Pay {amount} to {payee}?"),
                items,
                expiry: None,
                accounts: choices(i.debtor_account.as_ref().map(|a| a.identification.as_str())),
                many: false,
                account_legend: "Choose the account to pay from",
                error,
            }
        }
        Kind::FundsConfirmation => {
            let d: FundsConfirmationConsentDetails =
                serde_json::from_str(&consent.data).map_err(broken)?;
            ConsentView {
                tpp: &tpp,
                customer: &customer,
                csrf: &session.csrf,
                heading: format!("Let {tpp} check you have enough money?"),
                items: vec![
                    "Whether this account has enough money for a purchase (yes or no only; \
                     never your balance)"
                        .into(),
                ],
                expiry: d.expiration_date_time,
                accounts: choices(Some(&d.debtor_account.identification)),
                many: false,
                account_legend: "The account to check",
                error,
            }
        }
    };
    if view.accounts.is_empty() {
        return Err(bad(
            "no_eligible_account",
            "None of your accounts can be used for this request (the app named an account you \
             do not hold).",
        ));
    }
    Ok(pages::page(
        StatusCode::OK,
        "Review access",
        &pages::consent(&view),
    ))
}

/// The customer's side of a refusal from the consent lifecycle, as a page.
fn refused(r: Refusal) -> PageError {
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

/// The request's consent, still waiting for this decision.
async fn pending_consent(
    state: &AppState,
    request: &AuthorizationRequest,
) -> Result<ConsentRecord, PageError> {
    decision::pending(
        &state.store,
        &request.consent_id,
        &request.client_id,
        request.consent_kind,
        state.clock.now(),
    )
    .await
    .map_err(refused)
}

#[utoipa::path(post, path = "/authorize/decision", tag = "customer",
    responses((status = 303, description = "Back to the client's redirect URI with code, state and iss (RFC 9207), or error=access_denied"),
        (status = 400, description = "No accounts chosen, or the session expired (HTML)", content_type = "text/html"),
        (status = 403, description = "CSRF check failed (HTML)", content_type = "text/html")))]
#[post("/authorize/decision")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn authorize_decision(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> HttpResponse {
    decide(&req, &body, &state).await.unwrap_or_else(Into::into)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

async fn decide(req: &HttpRequest, body: &[u8], state: &AppState) -> PageResult {
    let fields = form_fields(body)?;
    let (id, session) = checked_session(req, state, &fields).await?;
    let request = session.request.clone().ok_or_else(|| {
        bad(
            "no_pending_request",
            "There is no request to decide in this session.",
        )
    })?;
    note_request(req, &request);
    let psu = session
        .psu
        .clone()
        .ok_or_else(|| bad("not_signed_in", "Sign in before deciding."))?;
    remember(req, |ctx| ctx.psu = Some(psu.clone()));
    let issuer = &state.settings.server.public_url;
    let consent = pending_consent(state, &request)
        .await
        .map_err(|e| e.for_client(&request, issuer))?;
    let now = state.clock.now();
    match field(&fields, "decision") {
        Some("deny") => {
            decision::deny(&state.store, &consent, now)
                .await
                .map_err(refused)?;
            state
                .state
                .delete(&session_key(&id))
                .await
                .map_err(broken)?;
            let mut res = see_other(&redirect_to(
                &request,
                issuer,
                Err(("access_denied", "the customer denied the request")),
            ));
            res.extensions_mut().insert(AuditNote {
                outcome: Outcome::Allowed,
                reason: "customer_denied",
            });
            Ok(res)
        }
        Some("approve") => {
            let owned = state.store.accounts_of(&psu).await.map_err(broken)?;
            let chosen: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k == "account")
                .map(|(_, v)| v.clone())
                .collect();
            match decision::approve(&state.store, &consent, &psu, &owned, &chosen, now).await {
                Ok(()) => {}
                // A choice to make again: the page again, with what to fix.
                Err(Refusal::AccountChoice { many }) => {
                    let msg = if many {
                        "Choose at least one account to share."
                    } else {
                        "Choose one account."
                    };
                    let mut page =
                        consent_page(state, &session, &request, Some(msg.into())).await?;
                    *page.status_mut() = StatusCode::BAD_REQUEST;
                    return Ok(page);
                }
                Err(e @ Refusal::AlreadyDecided(_)) => {
                    return Err(refused(e).for_client(&request, issuer));
                }
                Err(e) => return Err(refused(e)),
            }
            let code = issue_code(
                &state.state,
                &IssuedCode {
                    request: request.clone(),
                    psu,
                    auth_time: session.signed_in_at,
                },
                now.unix_timestamp(),
            )
            .await
            .map_err(broken)?;
            state
                .state
                .delete(&session_key(&id))
                .await
                .map_err(broken)?;
            Ok(see_other(&redirect_to(&request, issuer, Ok(&code))))
        }
        _ => Err(bad("decision_missing", "Choose Allow or Deny.")),
    }
}

// ---------------------------------------------------------------- connected apps

#[utoipa::path(get, path = "/connected-apps", tag = "customer",
    responses((status = 200, description = "Sign-in form, or the customer's connected apps (HTML)", content_type = "text/html")))]
#[get("/connected-apps")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn connected_apps(req: HttpRequest, state: Data<AppState>) -> HttpResponse {
    show_apps(&req, &state).await.unwrap_or_else(Into::into)
}

async fn show_apps(req: &HttpRequest, state: &AppState) -> PageResult {
    if let Some((_, session)) = load_session(req, state).await?
        && let Some(psu) = &session.psu
    {
        return apps_page(state, psu, &session.csrf).await;
    }
    let mut res = anonymous_login(StatusCode::OK, None)?;
    res.extensions_mut().insert(AnonymousView);
    Ok(res)
}

/// The connected-apps sign-in form for a visitor not signed in. Nothing is kept on the server
/// for them: the form's CSRF token is also in a `__Host-` cookie, and the two must match when
/// the form comes back (double submit; the prefix keeps other hosts from setting the cookie).
fn anonymous_login(status: StatusCode, message: Option<&str>) -> PageResult {
    let csrf = random_token().map_err(broken)?;
    let cookie = Cookie::build(CSRF_COOKIE, csrf.clone())
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::seconds(SESSION_LIFETIME))
        .finish();
    let mut res = pages::page(
        status,
        "Connected apps",
        &pages::login("/connected-apps/login", &csrf, None, message),
    );
    res.add_cookie(&cookie).map_err(broken)?;
    Ok(res)
}

/// The anonymous sign-in form's CSRF check: the field echoes the cookie.
fn checked_anonymous_csrf(req: &HttpRequest, fields: &[(String, String)]) -> Result<(), PageError> {
    let sent = field(fields, "csrf").unwrap_or_default();
    let kept = req.cookie(CSRF_COOKIE);
    let kept = kept.as_ref().map_or("", |c| c.value());
    if sent.is_empty() || !openssl::memcmp::eq(digest(sent).as_bytes(), digest(kept).as_bytes()) {
        return Err(page_error(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "This form was not sent from this bank's page (CSRF check failed). Open the page \
             again and sign in."
                .into(),
        ));
    }
    Ok(())
}

async fn apps_page(state: &AppState, psu: &str, csrf: &str) -> PageResult {
    let mut apps = Vec::new();
    for c in state.store.consents_of_psu(psu).await.map_err(broken)? {
        let what = match c.kind {
            Kind::AccountAccess => "Account information",
            Kind::DomesticPayment => "A single payment",
            Kind::FundsConfirmation => "Confirmation of funds",
        };
        let usable = c.usable(state.clock.now()).is_ok();
        let status = match (c.status, usable) {
            (Status::Authorised, true) => "Active".to_string(),
            (Status::Authorised, false) => "Expired".to_string(),
            (s, _) => s.to_string(),
        };
        apps.push(ConnectedApp {
            tpp: tpp_name(state, &c.client_id).await?,
            consent_id: c.consent_id.clone(),
            what: what.into(),
            since: c.status_updated_at.clone(),
            revocable: usable && c.kind != Kind::DomesticPayment,
            status,
        });
    }
    Ok(pages::page(
        StatusCode::OK,
        "Connected apps",
        &pages::connected_apps(psu, csrf, &apps),
    ))
}

#[utoipa::path(post, path = "/connected-apps/login", tag = "customer",
    responses((status = 303, description = "Signed in; back to /connected-apps"),
        (status = 401, description = "Wrong username or password (HTML)", content_type = "text/html")))]
#[post("/connected-apps/login")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn connected_apps_login(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> HttpResponse {
    apps_login(&req, &body, &state)
        .await
        .unwrap_or_else(Into::into)
}

async fn apps_login(req: &HttpRequest, body: &[u8], state: &AppState) -> PageResult {
    let fields = form_fields(body)?;
    checked_anonymous_csrf(req, &fields)?;
    match check_sign_in(req, state, &fields).await? {
        Err(refusal) => {
            let mut res = anonymous_login(refusal.status, Some(refusal.message))?;
            res.extensions_mut()
                .insert(AuditNote::denied(refusal.reason));
            Ok(res)
        }
        // Server-side state begins here, for a customer who proved who they are.
        Ok(psu) => {
            let session = Session {
                csrf: random_token().map_err(broken)?,
                psu: Some(psu),
                signed_in_at: state.clock.now().unix_timestamp(),
                request: None,
            };
            let (_, cookie) = new_session(state, &session).await?;
            let mut res = see_other("/connected-apps");
            res.add_cookie(&cookie).map_err(broken)?;
            let mut spent = Cookie::build(CSRF_COOKIE, "")
                .path("/")
                .secure(true)
                .finish();
            spent.make_removal();
            res.add_cookie(&spent).map_err(broken)?;
            Ok(res)
        }
    }
}

#[utoipa::path(post, path = "/connected-apps/revoke", tag = "customer",
    responses((status = 303, description = "Access withdrawn; back to /connected-apps"),
        (status = 403, description = "CSRF check failed, or not this customer's consent (HTML)", content_type = "text/html")))]
#[post("/connected-apps/revoke")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn connected_apps_revoke(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> HttpResponse {
    apps_revoke(&req, &body, &state)
        .await
        .unwrap_or_else(Into::into)
}

async fn apps_revoke(req: &HttpRequest, body: &[u8], state: &AppState) -> PageResult {
    let fields = form_fields(body)?;
    let (_, session) = checked_session(req, state, &fields).await?;
    let psu = session
        .psu
        .ok_or_else(|| bad("not_signed_in", "Sign in first."))?;
    remember(req, |ctx| ctx.psu = Some(psu.clone()));
    let consent_id = field(&fields, "consent_id").unwrap_or_default();
    let consent = decision::withdraw(&state.store, &psu, consent_id, state.clock.now())
        .await
        .map_err(refused)?;
    remember(req, |ctx| {
        ctx.client_id = Some(consent.client_id.clone());
        ctx.consent_id = Some(consent.consent_id.clone());
    });
    Ok(see_other("/connected-apps"))
}

#[utoipa::path(post, path = "/connected-apps/logout", tag = "customer",
    responses((status = 303, description = "Signed out; back to /connected-apps")))]
#[post("/connected-apps/logout")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn connected_apps_logout(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> HttpResponse {
    let result = async {
        let fields = form_fields(&body)?;
        let (id, _) = checked_session(&req, &state, &fields).await?;
        state
            .state
            .delete(&session_key(&id))
            .await
            .map_err(broken)?;
        Ok::<_, PageError>(see_other("/connected-apps"))
    };
    result.await.unwrap_or_else(Into::into)
}
