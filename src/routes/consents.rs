//! Open Banking consent endpoints. Each takes [`Authorized`], so it runs only after the whole
//! guard chain passed, and hands the work to `resources::consents`.

use actix_web::http::header::{HeaderName, LOCATION};
use actix_web::web::{Bytes, Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, delete, get, post};

use super::edge::remember;
use super::error::ApiError;
use super::guard::Authorized;
use crate::app::AppState;
use crate::resources::codes;
use crate::resources::consents::{
    self as consents, AccountAccess, AccountAccessConsentDetails, AccountAccessConsentRequest,
    ConsentKind, ConsentResponse, DomesticPayment, DomesticPaymentConsentDetails,
    DomesticPaymentConsentRequest, FundsConfirmation, FundsConfirmationConsentDetails,
    FundsConfirmationConsentRequest,
};

pub(super) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");
/// Consent requests are small; anything larger is refused unread.
const BODY_LIMIT: usize = 64 * 1024;

/// Reads the body only once the guard chain has passed (handlers run after their extractors),
/// so an unauthorised request is answered 401/403 whatever its body (SPEC §5: first failure).
pub(super) async fn read_body(payload: Payload) -> Result<Bytes, ApiError> {
    match payload.to_bytes_limited(BODY_LIMIT).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "body_unreadable",
            codes::INVALID_FORMAT,
            None,
            format!("the request body could not be read: {e}"),
        )),
        Err(_) => Err(ApiError::TooLarge(format!(
            "the request body is larger than {BODY_LIMIT} bytes"
        ))),
    }
}

async fn create<K: ConsentKind>(
    req: &HttpRequest,
    auth: &Authorized,
    body: &Bytes,
    state: &AppState,
    idempotency_required: bool,
) -> Result<HttpResponse, ApiError>
where
    K::Details: utoipa::ToSchema + serde::Serialize,
{
    let key = match req.headers().get(IDEMPOTENCY_KEY) {
        Some(v) => {
            let v = v
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 40)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "idempotency_key_invalid",
                        codes::HEADER_INVALID,
                        Some("x-idempotency-key"),
                        "x-idempotency-key must be 1 to 40 characters",
                    )
                })?;
            Some(v)
        }
        None if idempotency_required => {
            return Err(ApiError::bad_request(
                "idempotency_key_missing",
                codes::HEADER_MISSING,
                Some("x-idempotency-key"),
                "x-idempotency-key is required",
            ));
        }
        None => None,
    };
    let (_, response) = consents::create::<K>(
        &state.store,
        &auth.client.client_id,
        body,
        key,
        &state.settings.server.mtls_url,
        state.clock.now(),
    )
    .await?;
    remember(req, |ctx| {
        ctx.consent_id = Some(response.data.consent_id.clone())
    });
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, response.links.self_link.clone()))
        .json(response))
}

async fn read<K: ConsentKind>(
    auth: &Authorized,
    consent_id: &str,
    state: &AppState,
) -> Result<HttpResponse, ApiError>
where
    K::Details: utoipa::ToSchema + serde::Serialize,
{
    let response = consents::get::<K>(
        &state.store,
        &auth.client.client_id,
        consent_id,
        &state.settings.server.mtls_url,
    )
    .await?;
    Ok(HttpResponse::Ok().json(response))
}

/// Create an account-access consent (AISP).
#[utoipa::path(tag = "account information",
    request_body = AccountAccessConsentRequest,
    params(("x-fapi-interaction-id" = Option<String>, Header, description = "Echoed; generated when absent")),
    responses(
        (status = 201, description = "Consent created, AwaitingAuthorisation", body = ConsentResponse<AccountAccessConsentDetails>),
        (status = 400, description = "Malformed or invalid body (Open Banking error)"),
        (status = 401, description = "Certificate or token refused; WWW-Authenticate says why"),
        (status = 403, description = "Role or scope not allowed by policy")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[post("/open-banking/v3.1/aisp/account-access-consents")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn create_account_access_consent(
    req: HttpRequest,
    auth: Authorized,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    create::<AccountAccess>(&req, &auth, &body, &state, false).await
}

/// Read an account-access consent.
#[utoipa::path(tag = "account information",
    params(("ConsentId" = String, Path, description = "Consent id")),
    responses(
        (status = 200, description = "The consent", body = ConsentResponse<AccountAccessConsentDetails>),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Role or scope not allowed by policy"),
        (status = 404, description = "No such consent for this client")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[get("/open-banking/v3.1/aisp/account-access-consents/{ConsentId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_account_access_consent(
    auth: Authorized,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read::<AccountAccess>(&auth, &id, &state).await
}

/// Delete (revoke) an account-access consent.
#[utoipa::path(tag = "account information",
    params(("ConsentId" = String, Path, description = "Consent id")),
    responses(
        (status = 204, description = "Consent revoked"),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Role or scope not allowed by policy"),
        (status = 404, description = "No such consent for this client")),
    security(("mutual_tls" = []), ("bearer" = ["accounts"])))]
#[delete("/open-banking/v3.1/aisp/account-access-consents/{ConsentId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn delete_account_access_consent(
    auth: Authorized,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    consents::revoke::<AccountAccess>(&state.store, &auth.client.client_id, &id, state.clock.now())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Create a domestic-payment consent (PISP). `x-idempotency-key` is required.
#[utoipa::path(tag = "payment initiation",
    request_body = DomesticPaymentConsentRequest,
    params(("x-idempotency-key" = String, Header, description = "Same key and body: the same consent; same key, other body: 400")),
    responses(
        (status = 201, description = "Consent created, AwaitingAuthorisation", body = ConsentResponse<DomesticPaymentConsentDetails>),
        (status = 400, description = "Malformed or invalid body, missing or reused idempotency key"),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Role or scope not allowed by policy")),
    security(("mutual_tls" = []), ("bearer" = ["payments"])))]
#[post("/open-banking/v3.1/pisp/domestic-payment-consents")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn create_domestic_payment_consent(
    req: HttpRequest,
    auth: Authorized,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    create::<DomesticPayment>(&req, &auth, &body, &state, true).await
}

/// Read a domestic-payment consent.
#[utoipa::path(tag = "payment initiation",
    params(("ConsentId" = String, Path, description = "Consent id")),
    responses(
        (status = 200, description = "The consent", body = ConsentResponse<DomesticPaymentConsentDetails>),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Role or scope not allowed by policy"),
        (status = 404, description = "No such consent for this client")),
    security(("mutual_tls" = []), ("bearer" = ["payments"])))]
#[get("/open-banking/v3.1/pisp/domestic-payment-consents/{ConsentId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_domestic_payment_consent(
    auth: Authorized,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read::<DomesticPayment>(&auth, &id, &state).await
}

/// Create a funds-confirmation consent (CBPII).
#[utoipa::path(tag = "confirmation of funds",
    request_body = FundsConfirmationConsentRequest,
    responses(
        (status = 201, description = "Consent created, AwaitingAuthorisation", body = ConsentResponse<FundsConfirmationConsentDetails>),
        (status = 400, description = "Malformed or invalid body"),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Role or scope not allowed by policy")),
    security(("mutual_tls" = []), ("bearer" = ["fundsconfirmations"])))]
#[post("/open-banking/v3.1/cbpii/funds-confirmation-consents")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn create_funds_confirmation_consent(
    req: HttpRequest,
    auth: Authorized,
    payload: Payload,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(payload).await?;
    create::<FundsConfirmation>(&req, &auth, &body, &state, false).await
}

/// Read a funds-confirmation consent.
#[utoipa::path(tag = "confirmation of funds",
    params(("ConsentId" = String, Path, description = "Consent id")),
    responses(
        (status = 200, description = "The consent", body = ConsentResponse<FundsConfirmationConsentDetails>),
        (status = 401, description = "Certificate or token refused"),
        (status = 403, description = "Role or scope not allowed by policy"),
        (status = 404, description = "No such consent for this client")),
    security(("mutual_tls" = []), ("bearer" = ["fundsconfirmations"])))]
#[get("/open-banking/v3.1/cbpii/funds-confirmation-consents/{ConsentId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_funds_confirmation_consent(
    auth: Authorized,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    read::<FundsConfirmation>(&auth, &id, &state).await
}
