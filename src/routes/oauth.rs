//! Authorization-server endpoints on the mTLS listener: `/token`, `/introspect`, `/revoke`.
//! Clients authenticate with their certificate (RFC 8705 §2) and name themselves with
//! `client_id`.

use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::edge::{AuditNote, remember};
use super::error::ApiError;
use super::guard::client_cert;
use crate::audit::Outcome;
use crate::clock;
use crate::oauth::clients::{Client, ClientId};
use crate::oauth::token::{Confirmation, TokenRejection};
use crate::oauth::{OAuthError, client_credentials_scope};
use crate::tls::VerifiedClientCert;

/// RFC 6749 §4.4.2 token request (form-encoded).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`
    pub grant_type: Option<String>,
    /// Required with mTLS client authentication (RFC 8705 §2).
    pub client_id: Option<String>,
    /// Space-separated; defaults to every scope the client's roles allow.
    pub scope: Option<String>,
}

/// RFC 6749 §5.1 token response.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`: certificate binding does not change the token type (RFC 8705 §3).
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
}

/// RFC 6749 §5.2 error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    pub error: String,
    pub error_description: String,
}

/// RFC 7662 / RFC 7009 request: the token, and the calling client.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenActionRequest {
    pub token: Option<String>,
    pub token_type_hint: Option<String>,
    pub client_id: Option<String>,
}

/// RFC 7662 §2.2 introspection response.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
}

impl IntrospectionResponse {
    fn inactive() -> Self {
        Self {
            active: false,
            scope: None,
            client_id: None,
            token_type: None,
            exp: None,
            iat: None,
            nbf: None,
            sub: None,
            aud: None,
            iss: None,
            jti: None,
            cnf: None,
            consent_id: None,
        }
    }
}

fn form<T: serde::de::DeserializeOwned>(req: &HttpRequest, body: &Bytes) -> Result<T, OAuthError> {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ));
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|e| OAuthError::InvalidRequest(format!("malformed form body: {e}")))
}

/// Authenticates the calling client by the certificate on this connection (RFC 8705 §2).
async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    client_id: Option<&str>,
) -> Result<(Client, VerifiedClientCert), ApiError> {
    let cert = client_cert(req).map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
    let client_id = client_id.ok_or_else(|| {
        OAuthError::InvalidRequest("client_id is required with mTLS client authentication".into())
    })?;
    let client_id: ClientId = client_id
        .parse()
        .map_err(|_| OAuthError::InvalidClient(format!("unknown client {client_id:?}")))?;
    let client = state
        .store
        .client(&client_id)
        .await?
        .ok_or_else(|| OAuthError::InvalidClient(format!("unknown client {client_id}")))?;
    client.authenticate(&cert)?;
    remember(req, |ctx| {
        ctx.client_id = Some(client.client_id.to_string())
    });
    Ok((client, cert))
}

/// Token endpoint (RFC 6749 §3.2): issues certificate-bound access tokens.
#[utoipa::path(post, path = "/token", tag = "authorization server",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Token issued, bound to the client certificate", body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_scope, unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client: unknown, suspended, or the certificate does not authenticate it", body = OAuthErrorBody)))]
#[post("/token")]
pub async fn token(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let form: TokenRequest = form(&req, &body)?;
    let grant_type = form
        .grant_type
        .as_deref()
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::UnsupportedGrantType(format!(
            "grant_type {grant_type:?} is not supported; use client_credentials"
        ))
        .into());
    }
    let (client, cert) = authenticate(&req, &state, form.client_id.as_deref()).await?;
    let policy = state.policy.load();
    let scope = client_credentials_scope(form.scope.as_deref(), &policy.scopes_for(&client.roles))?;
    let now = clock::now().unix_timestamp();
    let minted = state.tokens.mint(
        &client.client_id,
        scope,
        &cert,
        None,
        policy.access_token_lifetime(),
        now,
    )?;
    state
        .metrics
        .tokens_issued
        .with_label_values(&[grant_type])
        .inc();
    remember(&req, |ctx| ctx.token_jti = Some(minted.jti.clone()));
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: minted.access_token,
            token_type: "Bearer".into(),
            expires_in: minted.expires_in,
            scope: minted.scope.to_string(),
        }))
}

/// Token introspection (RFC 7662). The token's own client may introspect it, and so may an
/// operator (a certificate with an operator role, sending no `client_id`); for any other caller
/// the token is `{"active": false}` (RFC 7662 §2.2).
#[utoipa::path(post, path = "/introspect", tag = "authorization server",
    request_body(content = TokenActionRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Introspection result; `cnf` carries the certificate binding", body = IntrospectionResponse),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody)))]
#[post("/introspect")]
pub async fn introspect(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let form: TokenActionRequest = form(&req, &body)?;
    let operator = form.client_id.is_none() && client_cert(&req).is_ok_and(|c| c.is_operator());
    let caller = if operator {
        None
    } else {
        Some(
            authenticate(&req, &state, form.client_id.as_deref())
                .await?
                .0,
        )
    };
    let raw = form
        .token
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    let now = clock::now().unix_timestamp();
    let body = match state.tokens.verify_unbound(&raw, &state.state, now).await {
        Ok(claims)
            if caller
                .as_ref()
                .is_none_or(|c| claims.client_id == c.client_id.as_str()) =>
        {
            remember(&req, |ctx| ctx.token_jti = Some(claims.jti.clone()));
            IntrospectionResponse {
                active: true,
                scope: Some(claims.scope),
                client_id: Some(claims.client_id),
                token_type: Some("Bearer".into()),
                exp: Some(claims.exp),
                iat: Some(claims.iat),
                nbf: Some(claims.nbf),
                sub: Some(claims.sub),
                aud: Some(claims.aud),
                iss: Some(claims.iss),
                jti: Some(claims.jti),
                cnf: Some(claims.cnf),
                consent_id: claims.consent_id,
            }
        }
        Ok(claims) => {
            remember(&req, |ctx| ctx.token_jti = Some(claims.jti.clone()));
            let mut res = json_no_store(&IntrospectionResponse::inactive());
            res.extensions_mut().insert(AuditNote {
                outcome: Outcome::Denied,
                reason: "introspection_of_another_clients_token",
            });
            return Ok(res);
        }
        Err(_) => IntrospectionResponse::inactive(),
    };
    Ok(json_no_store(&body))
}

/// Token revocation (RFC 7009). Revoking an unknown, expired or already revoked token
/// succeeds; revoking another client's token is refused.
#[utoipa::path(post, path = "/revoke", tag = "authorization server",
    request_body(content = TokenActionRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked (or nothing to revoke)"),
        (status = 400, description = "invalid_request, or unauthorized_client for another client's token", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody)))]
#[post("/revoke")]
pub async fn revoke(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let form: TokenActionRequest = form(&req, &body)?;
    let (client, _) = authenticate(&req, &state, form.client_id.as_deref()).await?;
    let raw = form
        .token
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    let now = clock::now().unix_timestamp();
    let verified = state.tokens.verify_unbound(&raw, &state.state, now).await;
    if let Err(TokenRejection::StateUnavailable) = verified {
        return Err(OAuthError::TemporarilyUnavailable(
            "revocation state is unavailable; nothing was revoked, try again".into(),
        )
        .into());
    }
    if let Ok(claims) = verified {
        remember(&req, |ctx| ctx.token_jti = Some(claims.jti.clone()));
        if claims.client_id != client.client_id.as_str() {
            return Err(OAuthError::UnauthorizedClient(
                "the token was not issued to this client".into(),
            )
            .into());
        }
        state
            .store
            .insert_revocation(&claims.jti, &claims.client_id, claims.exp, now)
            .await?;
        state
            .state
            .revoke(&claims.jti, claims.exp, now)
            .await
            .map_err(|e| OAuthError::TemporarilyUnavailable(e.to_string()))?;
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

fn json_no_store(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}
