//! The customer's side of the authorization flow, on the public listener (a browser is never
//! asked for a certificate): `/authorize` (pushed requests only), sign-in, the consent page and
//! the decision.

use actix_web::cookie::Cookie;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};
use serde::Deserialize;

use super::customer::*;
use super::edge::{AuditNote, remember};
use super::pages::{self, AccountChoice, ConsentView};
use crate::app::AppState;
use crate::audit::Outcome;
use crate::consent::Kind;
use crate::oauth::authorize::{
    AuthorizationRequest, IssuedCode, random_token, redirect_to, request_uri_key,
};
use crate::oauth::grants::issue_code;
use crate::registry::{ClientId, ClientStatus};
use crate::resources::consents::{
    AccountAccessConsentDetails, DomesticPaymentConsentDetails, FundsConfirmationConsentDetails,
};
use crate::resources::decision::{self, Refusal};
use crate::resources::sandbox::format_minor;
use crate::store::{AccountRecord, ConsentRecord};
#[derive(Deserialize)]
pub struct AuthorizeQuery {
    client_id: Option<String>,
    request_uri: Option<String>,
}

/// RFC 6749 §4.1.1 via RFC 9126 §4: only a pushed request, by its single-use `request_uri`.
#[utoipa::path(tag = "customer",
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

#[utoipa::path(tag = "customer",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "username, password, csrf"),
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

#[utoipa::path(tag = "customer",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf, decision (approve or deny), account (each account shared, on approval)"),
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
    let psu = signed_in(req, &session, "Sign in before deciding.")?;
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
