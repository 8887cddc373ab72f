//! The partner onboarding portal's API (SPEC §6), on the mTLS listener for operator
//! certificates with the `portal` role: a client's certificate set, added to and revoked from.
//! Every call is audited by the edge with the operator's certificate.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::web::{Bytes, Data, Path};
use actix_web::{FromRequest, HttpRequest, HttpResponse, get, post};
use openssl::x509::X509;
use serde::Serialize;
use utoipa::ToSchema;

use super::edge::remember;
use super::error::ApiError;
use super::guard::client_cert;
use crate::app::AppState;
use crate::clock;
use crate::oauth::clients::admissible_certificate;
use crate::oauth::token::certificate_revocation_key;
use crate::registry::{CertRecord, CertStatus, Client, ClientCert, ClientId};
use crate::resources::codes;
use crate::store::{CertAdded, CertRevoked};
use crate::tls::{OperatorRole, VerifiedClientCert};

/// A certificate expiring within this many days is flagged `expiring_soon`.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// The largest PEM accepted for a certificate.
const PEM_LIMIT: usize = 64 * 1024;

/// An operator whose certificate carries the `portal` role. A TPP's certificate, or an
/// operator's without that role (an auditor), is refused with 403.
pub struct Portal {
    pub cert: VerifiedClientCert,
}

impl FromRequest for Portal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(portal(req))
    }
}

fn portal(req: &HttpRequest) -> Result<Portal, ApiError> {
    let state = req
        .app_data::<Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let cert = client_cert(req, state.clock.unix())?;
    if cert.operator_roles().contains(&OperatorRole::Portal) {
        Ok(Portal { cert })
    } else if cert.is_operator() {
        Err(ApiError::OperatorRoleMissing(
            "the onboarding API needs an operator certificate with the portal role; this one \
             has other operator roles"
                .into(),
        ))
    } else {
        Err(ApiError::OperatorRoleMissing(
            "the onboarding API is for operators (portal role); a TPP certificate cannot use it"
                .into(),
        ))
    }
}

/// One certificate of a client's set, as the portal sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateView {
    /// base64url SHA-256 of the DER, as in `cnf.x5t#S256`.
    pub thumbprint: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    /// `active` or `revoked`.
    pub status: String,
    /// RFC 3339.
    pub not_after: String,
    pub expires_in_days: i64,
    /// Within 30 days of expiry.
    pub expiring_soon: bool,
    /// RFC 3339; absent for a certificate just revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_at: Option<String>,
}

impl CertificateView {
    fn of(record: &CertRecord, status: CertStatus, added_at: Option<String>, now: i64) -> Self {
        let expires_in_days = (record.not_after - now).div_euclid(86_400);
        Self {
            thumbprint: record.thumbprint.clone(),
            subject: record.subject.clone(),
            issuer: record.issuer.clone(),
            serial: record.serial.clone(),
            status: status.as_str().into(),
            not_after: time::OffsetDateTime::from_unix_timestamp(record.not_after)
                .map(clock::timestamp)
                .unwrap_or_default(),
            expires_in_days,
            expiring_soon: status == CertStatus::Active && expires_in_days < EXPIRY_WARNING_DAYS,
            added_at,
        }
    }

    fn listed(c: &ClientCert, now: i64) -> Self {
        Self::of(&c.record, c.status, Some(c.added_at.clone()), now)
    }
}

/// A client's certificate set.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateSet {
    pub client_id: String,
    pub certificates: Vec<CertificateView>,
}

async fn managed_client(req: &HttpRequest, state: &AppState, id: &str) -> Result<Client, ApiError> {
    let unknown = || ApiError::NotFound(format!("no client {id:?}"));
    let client_id: ClientId = id.parse().map_err(|_| unknown())?;
    let client = state.store.client(&client_id).await?.ok_or_else(unknown)?;
    remember(req, |s| s.client_id = Some(client.client_id.to_string()));
    Ok(client)
}

/// A client's certificates, revoked ones included, with their expiry.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "The certificate set", body = CertificateSet),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client")),
    security(("mutual_tls" = [])))]
#[get("/admin/clients/{ClientId}/certificates")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn list_certificates(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = managed_client(&req, &state, &id).await?;
    let now = state.clock.unix();
    let certificates = state
        .store
        .client_certificates_of(&client.client_id)
        .await?
        .iter()
        .map(|c| CertificateView::listed(c, now))
        .collect();
    Ok(HttpResponse::Ok().json(CertificateSet {
        client_id: client.client_id.to_string(),
        certificates,
    }))
}

/// Adds a certificate (PEM) to a client's set: the way to rotate. It must authenticate the
/// client as registered; at most five are active at once.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    request_body(content = String, content_type = "application/x-pem-file", description = "The certificate, PEM"),
    responses(
        (status = 201, description = "Added", body = CertificateView),
        (status = 400, description = "Unreadable, expired, not able to authenticate the client, registered already, or the set is full"),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client")),
    security(("mutual_tls" = [])))]
#[post("/admin/clients/{ClientId}/certificates")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn add_certificate(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = managed_client(&req, &state, &id).await?;
    let refused = |message: String| {
        ApiError::bad_request("certificate_refused", codes::FIELD_INVALID, None, message)
    };
    if body.len() > PEM_LIMIT {
        return Err(ApiError::TooLarge(format!(
            "a certificate PEM is at most {PEM_LIMIT} bytes"
        )));
    }
    let cert =
        X509::from_pem(&body).map_err(|_| refused("the body is not a PEM certificate".into()))?;
    let now = state.clock.unix();
    let record =
        admissible_certificate(&client, &cert, &state.settings.tls, now).map_err(|why| {
            refused(format!(
                "certificate not added to {}: {why}",
                client.client_id
            ))
        })?;
    let stamp = clock::ob_datetime(state.clock.now());
    match state
        .store
        .add_client_certificate(&client.client_id, &record, &stamp)
        .await
    {
        Ok(CertAdded::Added) => {}
        Ok(CertAdded::NoSuchClient) => {
            return Err(ApiError::NotFound(format!(
                "no client {:?}",
                client.client_id
            )));
        }
        Ok(CertAdded::SetFull) => {
            return Err(refused(format!(
                "client {} already has {} active certificates; revoke one first",
                client.client_id,
                crate::registry::MAX_ACTIVE_CERTS
            )));
        }
        Err(crate::store::StoreError::Conflict(what)) => {
            return Err(refused(format!("{what} is registered already")));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(HttpResponse::Created().json(CertificateView::of(
        &record,
        CertStatus::Active,
        Some(stamp),
        now,
    )))
}

/// Revokes a certificate of a client's set: calls over it are refused (401, naming it) and
/// every token bound to it is refused on every instance within a second.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id"),
        ("Thumbprint" = String, Path, description = "base64url SHA-256 of the certificate, as in cnf.x5t#S256")),
    responses(
        (status = 200, description = "Revoked (or revoked already)", body = CertificateView),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client, or no such certificate of it")),
    security(("mutual_tls" = [])))]
#[post("/admin/clients/{ClientId}/certificates/{Thumbprint}/revoke")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn revoke_certificate(
    req: HttpRequest,
    _portal: Portal,
    path: Path<(String, String)>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, thumbprint) = path.into_inner();
    let client = managed_client(&req, &state, &id).await?;
    let now = state.clock.unix();
    let record = match state
        .store
        .revoke_client_certificate(&client.client_id, &thumbprint)
        .await?
    {
        CertRevoked::Now(record) | CertRevoked::Already(record) => record,
        CertRevoked::NotFound => {
            return Err(ApiError::NotFound(format!(
                "client {} has no certificate {thumbprint:?}",
                client.client_id
            )));
        }
    };
    // This instance at once; the others read the database within a second.
    state
        .state
        .revoke(
            &certificate_revocation_key(&record.thumbprint),
            record.not_after,
            now,
        )
        .await
        .map_err(|e| ApiError::Unavailable {
            backend: super::error::Backend::SharedState,
            cause: e.to_string(),
        })?;
    Ok(HttpResponse::Ok().json(CertificateView::of(&record, CertStatus::Revoked, None, now)))
}
