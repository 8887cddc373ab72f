//! The partner onboarding portal's API (SPEC §6), on the mTLS listener for operator
//! certificates with the `portal` role: the clients, their lifecycle (approve, suspend,
//! activate, delete) and their certificate sets. Every call is audited by the edge with the
//! operator's certificate and the client concerned.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use std::collections::HashMap;

use actix_web::web::{Bytes, Data, Path, Query};
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, post};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::edge::remember;
use super::error::ApiError;
use super::guard::client_cert;
use crate::app::AppState;
use crate::clock;
use crate::oauth::clients::admissible_certificate;
use crate::oauth::token::certificate_revocation_key;
use crate::registry::{
    CertRecord, CertStatus, Client, ClientCert, ClientId, ClientStatus, Lifecycle,
};
use crate::resources::codes;
use crate::store::{CertAdded, CertRevoked};
use crate::tls::{OperatorRole, VerifiedClientCert};

/// The policy's `[certificates] expiry_warning_days`.
fn warning_days(state: &AppState) -> i64 {
    state.policy.load().expiry_warning_days()
}

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
    /// Within the policy's `[certificates] expiry_warning_days` of expiry.
    pub expiring_soon: bool,
    /// RFC 3339; absent for a certificate just revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_at: Option<String>,
}

impl CertificateView {
    fn of(
        record: &CertRecord,
        status: CertStatus,
        added_at: Option<String>,
        now: i64,
        warning_days: i64,
    ) -> Self {
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
            expiring_soon: status == CertStatus::Active && expires_in_days < warning_days,
            added_at,
        }
    }

    fn listed(c: &ClientCert, now: i64, warning_days: i64) -> Self {
        Self::of(
            &c.record,
            c.status,
            Some(c.added_at.clone()),
            now,
            warning_days,
        )
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
        .map(|c| CertificateView::listed(c, now, warning_days(&state)))
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
        warning_days(&state),
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
    let view = CertificateView::of(
        &record,
        CertStatus::Revoked,
        None,
        now,
        warning_days(&state),
    );
    Ok(HttpResponse::Ok().json(view))
}

/// Clients per page of `GET /admin/clients`.
const PAGE: usize = 50;

/// A client as the portal lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientSummary {
    pub client_id: String,
    pub name: String,
    /// `pending`, `active`, `suspended` or `deleted`.
    pub status: String,
    pub roles: Vec<String>,
    pub auth_method: String,
    pub created_at: String,
    /// When its first active certificate expires (RFC 3339); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soonest_cert_expiry: Option<String>,
    /// An active certificate expires within the policy's `expiry_warning_days`.
    pub expiring_soon: bool,
}

impl ClientSummary {
    fn of(client: &Client, soonest: Option<i64>, now: i64, warning_days: i64) -> Self {
        Self {
            client_id: client.client_id.to_string(),
            name: client.name.clone(),
            status: client.status.as_str().into(),
            roles: client
                .roles
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            auth_method: client.auth_method.as_str().into(),
            created_at: client.created_at.clone(),
            soonest_cert_expiry: soonest.and_then(|t| {
                time::OffsetDateTime::from_unix_timestamp(t)
                    .ok()
                    .map(clock::timestamp)
            }),
            expiring_soon: soonest.is_some_and(|t| (t - now) < warning_days * 86_400),
        }
    }
}

/// One page of clients, in client id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientPage {
    pub clients: Vec<ClientSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Which clients to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    /// Only clients in this status.
    pub status: Option<String>,
    /// Only clients whose id or name contains this (any case).
    pub q: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One client, with its certificate set.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientDetail {
    #[serde(flatten)]
    pub summary: ClientSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_dn: Option<String>,
    pub redirect_uris: Vec<String>,
    pub certificates: Vec<CertificateView>,
}

/// The clients, filtered and paged.
#[utoipa::path(tag = "onboarding",
    params(ClientQuery),
    responses(
        (status = 200, description = "A page of clients", body = ClientPage),
        (status = 400, description = "An unknown status"),
        (status = 403, description = "Not an operator certificate with the portal role")),
    security(("mutual_tls" = [])))]
#[get("/admin/clients")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn list_clients(
    _portal: Portal,
    query: Query<ClientQuery>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<ClientStatus>().map_err(|e| {
            ApiError::bad_request("invalid_query", codes::FIELD_INVALID, Some("status"), e)
        })?),
    };
    let needle = query.q.as_deref().map(str::to_lowercase);
    let mut soonest: HashMap<String, i64> = HashMap::new();
    for (owner, cert) in state.store.client_certificates().await? {
        soonest
            .entry(owner)
            .and_modify(|t| *t = (*t).min(cert.not_after))
            .or_insert(cert.not_after);
    }
    let now = state.clock.unix();
    let mut matching = state.store.clients().await?.into_iter().filter(|c| {
        status.is_none_or(|s| c.status == s)
            && needle.as_deref().is_none_or(|n| {
                c.client_id.as_str().to_lowercase().contains(n) || c.name.to_lowercase().contains(n)
            })
            && query
                .cursor
                .as_deref()
                .is_none_or(|after| c.client_id.as_str() > after)
    });
    let clients: Vec<ClientSummary> = matching
        .by_ref()
        .take(PAGE)
        .map(|c| {
            let first = soonest.get(c.client_id.as_str()).copied();
            ClientSummary::of(&c, first, now, warning_days(&state))
        })
        .collect();
    let next_cursor = (clients.len() == PAGE && matching.next().is_some())
        .then(|| clients.last().map(|c| c.client_id.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(ClientPage {
        clients,
        next_cursor,
    }))
}

/// One client, with its certificates and their expiry.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "The client", body = ClientDetail),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client")),
    security(("mutual_tls" = [])))]
#[get("/admin/clients/{ClientId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn get_client(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let client = managed_client(&req, &state, &id).await?;
    let now = state.clock.unix();
    let set = state
        .store
        .client_certificates_of(&client.client_id)
        .await?;
    let soonest = set
        .iter()
        .filter(|c| c.status == CertStatus::Active)
        .map(|c| c.record.not_after)
        .min();
    Ok(HttpResponse::Ok().json(ClientDetail {
        summary: ClientSummary::of(&client, soonest, now, warning_days(&state)),
        subject_dn: client.subject_dn.clone(),
        redirect_uris: client.redirect_uris.clone(),
        certificates: set
            .iter()
            .map(|c| CertificateView::listed(c, now, warning_days(&state)))
            .collect(),
    }))
}

/// Moves a client through its lifecycle; `409` when its status does not allow the move.
async fn lifecycle(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    step: Lifecycle,
) -> Result<Client, ApiError> {
    let client = managed_client(req, state, id).await?;
    let stamp = clock::ob_datetime(state.clock.now());
    if !state
        .store
        .transition_client(&client.client_id, step.from(), step.to(), &stamp)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "client {} is {}; it cannot become {} from there",
            client.client_id,
            client.status.as_str(),
            step.to().as_str()
        )));
    }
    Ok(Client {
        status: step.to(),
        ..client
    })
}

async fn lifecycle_answer(
    req: &HttpRequest,
    state: &AppState,
    id: &str,
    step: Lifecycle,
) -> Result<HttpResponse, ApiError> {
    let client = lifecycle(req, state, id, step).await?;
    let now = state.clock.unix();
    Ok(HttpResponse::Ok().json(ClientSummary::of(&client, None, now, warning_days(state))))
}

/// Lets a pending registration in.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Now active", body = ClientSummary),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client"),
        (status = 409, description = "Not pending")),
    security(("mutual_tls" = [])))]
#[post("/admin/clients/{ClientId}/approve")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn approve_client(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    lifecycle_answer(&req, &state, &id, Lifecycle::Approve).await
}

/// Suspends a client: its token requests and its tokens are refused until it is activated.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Now suspended", body = ClientSummary),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client"),
        (status = 409, description = "Suspended or deleted already")),
    security(("mutual_tls" = [])))]
#[post("/admin/clients/{ClientId}/suspend")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn suspend_client(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    lifecycle_answer(&req, &state, &id, Lifecycle::Suspend).await
}

/// Lets a suspended client in again.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    responses(
        (status = 200, description = "Now active", body = ClientSummary),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client"),
        (status = 409, description = "Active or deleted")),
    security(("mutual_tls" = [])))]
#[post("/admin/clients/{ClientId}/activate")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn activate_client(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    lifecycle_answer(&req, &state, &id, Lifecycle::Activate).await
}

/// Deletes a client (softly): every call and every token of it is refused from now on; it is
/// kept so the audit log still attributes its events.
#[utoipa::path(tag = "onboarding",
    params(("ClientId" = String, Path, description = "Client id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not an operator certificate with the portal role"),
        (status = 404, description = "No such client"),
        (status = 409, description = "Deleted already")),
    security(("mutual_tls" = [])))]
#[delete("/admin/clients/{ClientId}")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn delete_client(
    req: HttpRequest,
    _portal: Portal,
    id: Path<String>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    lifecycle(&req, &state, &id, Lifecycle::Delete).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What SIGHUP does: re-reads certificates, trust anchors, CRLs and policy. A broken file
/// leaves the running configuration in force and is named in the `400`. Connections opened
/// before a successful reload must reconnect.
#[utoipa::path(tag = "onboarding",
    responses(
        (status = 200, description = "Reloaded"),
        (status = 400, description = "A file is broken; nothing changed"),
        (status = 403, description = "Not an operator certificate with the portal role")),
    security(("mutual_tls" = [])))]
#[post("/admin/reload")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn reload(_portal: Portal, state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.reload.reload().await.map_err(|why| {
        ApiError::bad_request(
            "reload_failed",
            codes::FIELD_INVALID,
            None,
            format!("nothing was reloaded: {why}"),
        )
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"reloaded": true})))
}
