//! Authorization-server endpoints on the mTLS listener: `/token`, `/par`, `/introspect`,
//! `/revoke`.
//! Clients authenticate with their certificate (RFC 8705 §2) and name themselves with
//! `client_id`.

use actix_web::http::header;
use actix_web::web::{Bytes, Data};
use actix_web::{HttpRequest, HttpResponse, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::edge::{AuditNote, remember};
use super::error::ApiError;
use super::guard::{client_cert, within_rate_limit};
use crate::app::AppState;
use crate::audit::Outcome;
use crate::consent::{Kind, Status};
use crate::oauth::OAuthError;
use crate::oauth::authorize::{self, form_params, random_token};
use crate::oauth::grants::GrantContext;
use crate::oauth::request_object;
use crate::oauth::token::{
    AccessTokenClaims, Confirmation, MintedToken, TokenRejection, certificate_revocation_key,
};
use crate::registry::{Client, ClientId};
use crate::tls::VerifiedClientCert;

/// RFC 6749 token request (form-encoded): §4.4.2 `client_credentials`, §4.1.3
/// `authorization_code` (with RFC 7636 `code_verifier`), §6 `refresh_token`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`, `authorization_code` or `refresh_token`
    pub grant_type: Option<String>,
    /// Required with mTLS client authentication (RFC 8705 §2).
    pub client_id: Option<String>,
    /// `client_credentials`: space-separated; defaults to every scope the client's roles allow.
    pub scope: Option<String>,
    /// `authorization_code`: the code from the redirect.
    pub code: Option<String>,
    /// `authorization_code`: the redirect URI of the pushed request.
    pub redirect_uri: Option<String>,
    /// `authorization_code`: the PKCE verifier (S256).
    pub code_verifier: Option<String>,
    /// `refresh_token`
    pub refresh_token: Option<String>,
}

/// RFC 6749 §5.1 token response.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`: certificate binding does not change the token type (RFC 8705 §3).
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
    /// From `authorization_code`, and from `refresh_token` when rotation is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The consent the token acts for (customer grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<String>,
    /// OpenID Connect ID token (code grant with `openid`): `openbanking_intent_id`, `nonce`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// RFC 9126 §2.2 pushed authorization response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParResponse {
    pub request_uri: String,
    pub expires_in: i64,
}

/// RFC 9126 pushed authorization request (form-encoded; or `request` with a signed request
/// object, RFC 9101).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ParRequest {
    pub client_id: Option<String>,
    /// `code`
    pub response_type: Option<String>,
    /// Must be registered for the client, exactly.
    pub redirect_uri: Option<String>,
    /// e.g. `openid accounts`: `openid` and exactly one resource scope.
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    /// `S256` (nothing else is accepted).
    pub code_challenge_method: Option<String>,
    /// `{"id_token":{"openbanking_intent_id":{"value":"<ConsentId>","essential":true}}}`
    pub claims: Option<String>,
    /// A signed request object (JWS, ES256 or PS256) carrying the parameters instead.
    pub request: Option<String>,
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
    form_type(req)?;
    serde_urlencoded::from_bytes(body)
        .map_err(|e| OAuthError::InvalidRequest(format!("malformed form body: {e}")))
}

/// Authenticates the calling client by the certificate on this connection (RFC 8705 §2).
async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    client_id: Option<&str>,
) -> Result<(Client, VerifiedClientCert), ApiError> {
    let cert = client_cert(req, state.clock.unix())
        .map_err(|e| OAuthError::InvalidClient(e.to_string()))?;
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
    crate::oauth::clients::authenticate(&client, &cert)?;
    let revoked = certificate_revocation_key(cert.thumbprint_b64());
    match state.state.first_revoked(&[&revoked]).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(OAuthError::InvalidClient(format!(
                "certificate {} was revoked for client {}; use another certificate of its set",
                cert.thumbprint_b64(),
                client.client_id
            ))
            .into());
        }
        Err(_) => {
            return Err(OAuthError::TemporarilyUnavailable(
                "shared state is unavailable: whether this certificate was revoked cannot be \
                 told now; try again"
                    .into(),
            )
            .into());
        }
    }
    remember(req, |ctx| {
        ctx.client_id = Some(client.client_id.to_string())
    });
    within_rate_limit(state, &client).await?;
    Ok((client, cert))
}

/// Verifies a token presented to `/introspect` or `/revoke` (by its client, not necessarily
/// over the connection it is bound to); a token that verifies is what the request concerned.
async fn presented_token(
    req: &HttpRequest,
    state: &AppState,
    raw: &str,
    now: i64,
) -> Result<AccessTokenClaims, TokenRejection> {
    let verified = state.tokens.verify_unbound(raw, &state.state, now).await;
    if let Ok(claims) = &verified {
        remember(req, |s| s.token_jti = Some(claims.jti.clone()));
    }
    verified
}

fn form_type(req: &HttpRequest) -> Result<(), OAuthError> {
    let ok = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if ok {
        Ok(())
    } else {
        Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded".into(),
        ))
    }
}

/// Token endpoint (RFC 6749 §3.2): issues certificate-bound access tokens.
#[utoipa::path(tag = "authorization server",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Token issued, bound to the client certificate", body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, invalid_scope, unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client: unknown, suspended, or the certificate does not authenticate it", body = OAuthErrorBody)))]
#[post("/token")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn token(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    form_type(&req)?;
    let params = form_params(&body)?;
    let text = |name: &str| params.get(name).and_then(|v| v.as_str());
    let grant_type = text("grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?;
    if !matches!(
        grant_type,
        "client_credentials" | "authorization_code" | "refresh_token"
    ) {
        return Err(OAuthError::UnsupportedGrantType(format!(
            "grant_type {grant_type:?} is not supported; use client_credentials, \
             authorization_code or refresh_token"
        ))
        .into());
    }
    let (client, cert) = authenticate(&req, &state, text("client_id")).await?;
    let policy = state.policy.load();
    let now = state.clock.now().unix_timestamp();
    let grants = GrantContext {
        store: &state.store,
        state: &state.state,
        tokens: &state.tokens,
        settings: policy.grant_settings(),
    };
    let (minted, refresh_token, id_token, consent_id, rotated_from) =
        if grant_type == "client_credentials" {
            let allowed = policy.scopes_for(&client.roles);
            let minted = grants.client_credentials(&client, &cert, text("scope"), &allowed, now)?;
            (minted, None, None, None, None)
        } else {
            let issued = if grant_type == "authorization_code" {
                grants.exchange_code(&params, &client, &cert, now).await
            } else {
                grants.refresh(&params, &client, &cert, now).await
            };
            let issued = issued.inspect_err(|e| {
                if let OAuthError::InvalidGrant(_) = e {
                    state
                        .metrics
                        .token_rejections
                        .with_label_values(&["invalid_grant"])
                        .inc();
                }
            })?;
            (
                issued.access,
                issued.refresh_token,
                issued.id_token,
                Some(issued.consent_id),
                issued.rotated_from,
            )
        };
    state
        .metrics
        .tokens_issued
        .with_label_values(&[grant_type])
        .inc();
    let mut res = token_response(&req, minted, refresh_token, id_token, consent_id);
    if let Some(previous) = rotated_from {
        // The event carries both: the new certificate as its own, the old as cert_previous.
        tracing::info!(client = %client.client_id, from = %previous, to = %cert.thumbprint_b64(),
            "refresh moved the grant to the client's new certificate");
        remember(&req, |s| s.previous_cert = Some(previous));
        res.extensions_mut().insert(AuditNote {
            outcome: Outcome::Allowed,
            reason: "cert_rotated",
        });
    }
    Ok(res)
}

/// The token response, the one way to hand out what a grant minted; it records which token
/// was issued, for which consent, in the request's audit event.
fn token_response(
    req: &HttpRequest,
    minted: MintedToken,
    refresh_token: Option<String>,
    id_token: Option<String>,
    consent_id: Option<String>,
) -> HttpResponse {
    remember(req, |s| {
        s.token_jti = Some(minted.jti.clone());
        s.consent_id.clone_from(&consent_id);
    });
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenResponse {
            access_token: minted.access_token,
            token_type: "Bearer".into(),
            expires_in: minted.expires_in,
            scope: minted.scope.to_string(),
            refresh_token,
            consent_id,
            id_token,
        })
}

/// Pushed authorization request (RFC 9126): the only way to start `/authorize` (FAPI 2.0).
/// The client authenticates as at `/token`; the consent named in `claims` must be its own and
/// await authorisation.
#[utoipa::path(tag = "authorization server",
    request_body(content = ParRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 201, description = "Request stored; send the customer to /authorize with client_id and request_uri", body = ParResponse),
        (status = 400, description = "invalid_request, invalid_scope, invalid_request_object, unsupported_response_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody)))]
#[post("/par")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn par(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    form_type(&req)?;
    let form = form_params(&body)?;
    let client_id = form.get("client_id").and_then(|v| v.as_str());
    let (client, _) = authenticate(&req, &state, client_id).await?;
    let policy = state.policy.load();
    let now = state.clock.now().unix_timestamp();
    let params = match form.get("request").and_then(|v| v.as_str()) {
        Some(jwt) => {
            let mut claims =
                request_object::verify(jwt, &client, &state.settings.server.public_url, now)?;
            for k in ["iss", "aud", "exp", "nbf", "iat", "jti"] {
                claims.remove(k);
            }
            claims
        }
        None if policy.require_signed_request_object() => {
            return Err(OAuthError::InvalidRequest(
                "this server requires a signed request object (the request parameter, RFC 9101)"
                    .into(),
            )
            .into());
        }
        None => form,
    };
    let request = authorize::validate(&params, &client, &policy.scopes_for(&client.roles))?;
    remember(&req, |ctx| {
        ctx.consent_id = Some(request.consent_id.clone())
    });
    let consent = state
        .store
        .consent(&request.consent_id)
        .await?
        .filter(|c| c.client_id == client.client_id.as_str())
        .ok_or_else(|| {
            OAuthError::InvalidRequest(format!(
                "consent {} (openbanking_intent_id) is not one of this client's consents",
                request.consent_id
            ))
        })?;
    if consent.kind != request.consent_kind {
        return Err(OAuthError::InvalidRequest(format!(
            "consent {} is a {} consent, but the scope asks for a {} consent",
            consent.consent_id, consent.kind, request.consent_kind
        ))
        .into());
    }
    if consent
        .expires_at()
        .is_some_and(|at| at <= state.clock.now())
    {
        return Err(OAuthError::InvalidRequest(format!(
            "consent {} has expired",
            consent.consent_id
        ))
        .into());
    }
    if consent.status != Status::AwaitingAuthorisation {
        return Err(OAuthError::InvalidRequest(format!(
            "consent {} is {}, not AwaitingAuthorisation",
            consent.consent_id, consent.status
        ))
        .into());
    }
    let request_uri = format!("{}{}", authorize::REQUEST_URI_PREFIX, random_token()?);
    let value = serde_json::to_string(&request)
        .map_err(|e| OAuthError::ServerError(format!("request not storable: {e}")))?;
    state
        .state
        .put(
            &authorize::request_uri_key(&request_uri),
            &value,
            now + policy.request_uri_lifetime(),
            now,
        )
        .await
        .map_err(|e| OAuthError::unavailable("shared state", e))?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ParResponse {
            request_uri,
            expires_in: policy.request_uri_lifetime(),
        }))
}

/// Token introspection (RFC 7662). The token's own client may introspect it, and so may an
/// operator (a certificate with an operator role, sending no `client_id`); for any other caller
/// the token is `{"active": false}` (RFC 7662 §2.2).
#[utoipa::path(tag = "authorization server",
    request_body(content = TokenActionRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Introspection result; `cnf` carries the certificate binding", body = IntrospectionResponse),
        (status = 400, description = "invalid_request", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody)))]
#[post("/introspect")]
#[tracing::instrument(name = "handler", skip_all)]
pub async fn introspect(
    req: HttpRequest,
    body: Bytes,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let form: TokenActionRequest = form(&req, &body)?;
    let operator = form.client_id.is_none()
        && client_cert(&req, state.clock.unix()).is_ok_and(|c| c.is_operator());
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
    let now = state.clock.now().unix_timestamp();
    let verified = presented_token(&req, &state, &raw, now).await;
    // Whether the token is revoked is unknown while shared state is away: that is an outage
    // (503), never an answer about the token.
    if let Err(TokenRejection::StateUnavailable) = verified {
        return Err(OAuthError::TemporarilyUnavailable(
            "revocation state is unavailable; whether the token is active cannot be told now, \
             try again"
                .into(),
        )
        .into());
    }
    // A token whose consent was withdrawn or has expired is no longer active (RFC 7662 §2.2).
    let consent_live = match &verified {
        Ok(claims) => match &claims.consent_id {
            Some(id) => state.store.consent(id).await?.is_some_and(|c| {
                c.usable(state.clock.now()).is_ok()
                    || (c.kind == Kind::DomesticPayment && c.status == Status::Consumed)
            }),
            None => true,
        },
        Err(_) => false,
    };
    // Nor is a token of a client that is no longer let in (suspended, deleted).
    let client_live = match &verified {
        Ok(claims) => match claims.client_id.parse::<ClientId>() {
            Ok(id) => state
                .store
                .client(&id)
                .await?
                .is_some_and(|c| c.status.refusal().is_none()),
            Err(_) => false,
        },
        Err(_) => false,
    };
    let live = consent_live && client_live;
    let body = match verified {
        Ok(claims)
            if live
                && caller
                    .as_ref()
                    .is_none_or(|c| claims.client_id == c.client_id.as_str()) =>
        {
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
        Ok(_) if live => {
            let mut res = json_no_store(&IntrospectionResponse::inactive());
            res.extensions_mut().insert(AuditNote {
                outcome: Outcome::Denied,
                reason: "introspection_of_another_clients_token",
            });
            return Ok(res);
        }
        _ => IntrospectionResponse::inactive(),
    };
    Ok(json_no_store(&body))
}

/// Token revocation (RFC 7009). Revoking an unknown, expired or already revoked token
/// succeeds; revoking another client's token is refused.
#[utoipa::path(tag = "authorization server",
    request_body(content = TokenActionRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked (or nothing to revoke)"),
        (status = 400, description = "invalid_request, or unauthorized_client for another client's token", body = OAuthErrorBody),
        (status = 401, description = "invalid_client", body = OAuthErrorBody)))]
#[post("/revoke")]
#[tracing::instrument(name = "handler", skip_all)]
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
    let now = state.clock.now().unix_timestamp();
    let verified = presented_token(&req, &state, &raw, now).await;
    if let Err(TokenRejection::StateUnavailable) = verified {
        return Err(OAuthError::TemporarilyUnavailable(
            "revocation state is unavailable; nothing was revoked, try again".into(),
        )
        .into());
    }
    if verified.is_err() {
        // Not an access token of ours: perhaps a refresh token (RFC 7009 §2.1 MUST).
        let policy = state.policy.load();
        let grants = GrantContext {
            store: &state.store,
            state: &state.state,
            tokens: &state.tokens,
            settings: policy.grant_settings(),
        };
        grants.revoke_refresh_token(&raw, &client, now).await?;
    }
    if let Ok(claims) = verified {
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
            .map_err(|e| OAuthError::unavailable("shared state", e))?;
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
