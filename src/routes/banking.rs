//! Account information, payments and funds confirmation. Each handler takes [`Authorized`]
//! (the whole guard chain, consent included, has passed) and goes through [`serve_or_forward`]:
//! the sandbox bank answers, or the upstream the policy names for the route, after the
//! gateway's own checks.

use actix_web::http::header::LOCATION;
use actix_web::web::{Data, Path, Payload, Query};
use actix_web::{HttpRequest, HttpResponse, get, post};

use super::consents::{IDEMPOTENCY_KEY, read_body};
use super::edge::remember;
use super::error::ApiError;
use super::guard::Authorized;
use super::upstream;
use crate::app::AppState;
use crate::resources::accounts::{self, AccountRead, TransactionParams};
use crate::resources::codes;
use crate::resources::payments;
use crate::store::ConsentRecord;

fn consent(auth: &Authorized) -> Result<&ConsentRecord, ApiError> {
    auth.consent.as_ref().ok_or_else(|| {
        ApiError::Internal("route without a consent rule reached a consent handler".into())
    })
}

/// What the gateway itself enforces on a request the policy sends upstream, before and after
/// the upstream sees it.
enum Upstream<'a> {
    /// An account read: the answer is cut down to what the consent grants.
    AccountRead(AccountRead),
    /// A payment: the body must repeat the consent, which pays once (claimed here).
    Payment { key: &'a str },
    /// A funds confirmation: the body must name the token's consent.
    Funds,
    /// A payment's status: relayed as the upstream answers it.
    Relay,
}

/// Answers from the sandbox bank, or, when the policy names an upstream for the route, forwards
/// there after the gateway's own checks. The one place a banking route chooses.
async fn serve_or_forward(
    req: &HttpRequest,
    auth: &Authorized,
    payload: Payload,
    state: &AppState,
    upstream: Upstream<'_>,
    sandbox: impl AsyncFnOnce(Payload) -> Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let Some(up) = auth.permit.upstream() else {
        return sandbox(payload).await;
    };
    let body = read_body(payload).await?;
    match upstream {
        Upstream::AccountRead(read) => {
            upstream::forward_account_read(req, auth, up, body, state, read).await
        }
        Upstream::Payment { key } => {
            payments::claim_for_upstream(
                &state.store,
                &state.state,
                auth.client.client_id.as_str(),
                consent(auth)?,
                &body,
                key,
                state.clock.now(),
            )
            .await?;
            upstream::forward(req, auth, up, body, state).await
        }
        Upstream::Funds => {
            payments::check_funds_for_upstream(consent(auth)?, &body)?;
            upstream::forward(req, auth, up, body, state).await
        }
        Upstream::Relay => upstream::forward(req, auth, up, body, state).await,
    }
}

fn base(state: &AppState) -> &str {
    &state.settings.server.mtls_url
}

/// List the accounts the customer shared.
#[utoipa::path(tag = "account information",
    responses(
        (status = 200, description = "OBReadAccount6: the consented accounts; `Account` identification only with ReadAccountsDetail", body = Object),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Policy, or the consent is not authorised (revoked, expired) or lacks the permission")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[get("/open-banking/v3.1/aisp/accounts")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn list_accounts(
    req: HttpRequest,
    auth: Authorized,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = Upstream::AccountRead(AccountRead::Accounts);
    serve_or_forward(&req, &auth, payload, &state, read, async |_| {
        let body = accounts::list(&state.store, consent(&auth)?, base(&state)).await?;
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

/// One shared account.
#[utoipa::path(tag = "account information",
    params(("AccountId" = String, Path)),
    responses(
        (status = 200, description = "OBReadAccount6", body = Object),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "The consent does not cover this account, or is not authorised"),
        (status = 404, description = "No such account")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[get("/open-banking/v3.1/aisp/accounts/{AccountId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_account(
    req: HttpRequest,
    auth: Authorized,
    id: Path<String>,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = Upstream::AccountRead(AccountRead::Accounts);
    serve_or_forward(&req, &auth, payload, &state, read, async |_| {
        let body = accounts::one(&state.store, consent(&auth)?, &id, base(&state)).await?;
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

/// Balances of a shared account (ReadBalances).
#[utoipa::path(tag = "account information",
    params(("AccountId" = String, Path)),
    responses(
        (status = 200, description = "OBReadBalance1", body = Object),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "No ReadBalances, account not in the consent, or consent not authorised"),
        (status = 404, description = "No such account")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[get("/open-banking/v3.1/aisp/accounts/{AccountId}/balances")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_balances(
    req: HttpRequest,
    auth: Authorized,
    id: Path<String>,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = Upstream::AccountRead(AccountRead::Balances);
    serve_or_forward(&req, &auth, payload, &state, read, async |_| {
        let body = accounts::balances(&state.store, consent(&auth)?, &id, base(&state)).await?;
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

/// Transactions of a shared account, inside the consent's window, paged (`Links.Next`).
#[utoipa::path(tag = "account information",
    params(("AccountId" = String, Path),
        ("fromBookingDateTime" = Option<String>, Query), ("toBookingDateTime" = Option<String>, Query),
        ("page" = Option<i64>, Query, description = "1-based; 50 per page")),
    responses(
        (status = 200, description = "OBReadTransaction6: Basic or Detail fields, credits and/or debits as granted", body = Object),
        (status = 400, description = "Bad date or page"),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "No transaction permission, account not in the consent, or consent not authorised"),
        (status = 404, description = "No such account")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[get("/open-banking/v3.1/aisp/accounts/{AccountId}/transactions")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_transactions(
    req: HttpRequest,
    auth: Authorized,
    id: Path<String>,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = Upstream::AccountRead(AccountRead::Transactions);
    serve_or_forward(&req, &auth, payload, &state, read, async |_| {
        let params = Query::<TransactionParams>::from_query(req.query_string()).map_err(|e| {
            ApiError::bad_request("invalid_query", codes::FIELD_INVALID, None, e.to_string())
        })?;
        let consent = consent(&auth)?;
        let body =
            accounts::transactions(&state.store, consent, &id, &params, base(&state)).await?;
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

/// Make the payment a customer authorised. `x-idempotency-key` is required.
#[utoipa::path(tag = "payment initiation",
    request_body(content = Object, description = "OBWriteDomestic2: Data.ConsentId, and Data.Initiation and Risk exactly as in the consent"),
    params(("x-idempotency-key" = String, Header, description = "Same key and body: the same response, no second payment; other body: 400")),
    responses(
        (status = 201, description = "OBWriteDomesticResponse5", body = Object),
        (status = 400, description = "Malformed body, Initiation differs from the consent, idempotency key missing or reused"),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "The consent was already used, or is not authorised")),
    security(("mutual_tls" = []), ("bearer" = ["payments"])))]
#[post("/open-banking/v3.1/pisp/domestic-payments")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn create_payment(
    req: HttpRequest,
    auth: Authorized,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 40)
        .ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key_missing",
                codes::HEADER_MISSING,
                Some("x-idempotency-key"),
                "x-idempotency-key (1 to 40 characters) is required",
            )
        })?
        .to_string();
    let payment = Upstream::Payment { key: &key };
    serve_or_forward(&req, &auth, payload, &state, payment, async |payload| {
        let body = payments::create(
            &state.store,
            auth.client.client_id.as_str(),
            consent(&auth)?,
            &read_body(payload).await?,
            &key,
            base(&state),
            state.clock.now(),
        )
        .await?;
        let location = body["Links"]["Self"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(HttpResponse::Created()
            .insert_header((LOCATION, location))
            .json(body))
    })
    .await
}

/// Status of one of the client's payments.
#[utoipa::path(tag = "payment initiation",
    params(("DomesticPaymentId" = String, Path)),
    responses(
        (status = 200, description = "OBWriteDomesticResponse5", body = Object),
        (status = 401, description = "Certificate or token refused"),
        (status = 404, description = "No such payment for this client")),
    security(("mutual_tls" = []), ("bearer" = ["payments"])))]
#[get("/open-banking/v3.1/pisp/domestic-payments/{DomesticPaymentId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_payment(
    req: HttpRequest,
    auth: Authorized,
    id: Path<String>,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve_or_forward(&req, &auth, payload, &state, Upstream::Relay, async |_| {
        let client = auth.client.client_id.as_str();
        let body = payments::get(&state.store, client, &id, base(&state)).await?;
        if let Some(c) = body["Data"]["ConsentId"].as_str() {
            remember(&req, |s| s.consent_id = Some(c.to_string()));
        }
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

/// Confirm whether the consented account has the funds (CBPII).
#[utoipa::path(tag = "confirmation of funds",
    request_body(content = Object, description = "OBFundsConfirmation1: Data.ConsentId, Reference, InstructedAmount"),
    responses(
        (status = 201, description = "OBFundsConfirmationResponse1: FundsAvailable true or false", body = Object),
        (status = 400, description = "Malformed body or another consent's id"),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "The consent is not authorised (revoked, expired)")),
    security(("mutual_tls" = []), ("bearer" = ["fundsconfirmations"])))]
#[post("/open-banking/v3.1/cbpii/funds-confirmations")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn confirm_funds(
    req: HttpRequest,
    auth: Authorized,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve_or_forward(
        &req,
        &auth,
        payload,
        &state,
        Upstream::Funds,
        async |payload| {
            let body = payments::confirm_funds(
                &state.store,
                auth.client.client_id.as_str(),
                consent(&auth)?,
                &read_body(payload).await?,
                base(&state),
                state.clock.now(),
            )
            .await?;
            Ok(HttpResponse::Created().json(body))
        },
    )
    .await
}
