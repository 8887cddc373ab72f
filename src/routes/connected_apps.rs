//! The connected-apps page on the public listener, where a customer signs in, sees what they
//! shared with which app, and withdraws it.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, get, post};

use super::customer::*;
use super::edge::{AnonymousView, AuditNote, remember};
use super::pages::{self, ConnectedApp};
use crate::app::AppState;
use crate::consent::{Kind, Status};
use crate::oauth::authorize::random_token;
use crate::resources::decision;

#[utoipa::path(tag = "customer",
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
    let kept = req.cookie(CSRF_COOKIE);
    csrf_echoed(fields, kept.as_ref().map_or("", |c| c.value()))
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

#[utoipa::path(tag = "customer",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "username, password, csrf"),
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

#[utoipa::path(tag = "customer",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf, consent_id"),
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
    let psu = signed_in(req, &session, "Sign in first.")?;
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

#[utoipa::path(tag = "customer",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf"),
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
