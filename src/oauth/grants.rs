//! The token endpoint's customer grants: `authorization_code` (PKCE S256, single use, bound to
//! client and redirect URI) and `refresh_token` (bound to the client and the certificate it was
//! issued over; rotation a policy setting). Each issues a certificate-bound access token
//! carrying the consent id.

use serde_json::{Map, Value};

use super::authorize::{
    self, IssuedCode, USED_CODE_MEMORY, code_key, pkce_matches, random_token, used_code_key,
};
use super::token::{CustomerGrant, MintedToken, TokenService, certificate_revocation_key};
use super::{OAuthError, ScopeSet, client_credentials_scope};
use time::OffsetDateTime;

use crate::clock;
use crate::consent::Kind;
use crate::registry::{CertStatus, Client};
use crate::state::SharedState;
use crate::store::{ConsentRecord, GrantRecord, RefreshLookup, Store, StoreError};
use crate::tls::VerifiedClientCert;

/// What the customer grants need from the policy.
#[derive(Clone, Copy, Debug)]
pub struct GrantSettings {
    pub access_token_lifetime: i64,
    pub refresh_token_lifetime: i64,
    pub rotate_refresh_tokens: bool,
    /// For this many seconds after a certificate joins a client's set, a refresh token bound
    /// to another of its certificates may be presented over it (SPEC §6 rotation); 0: never.
    pub rotation_overlap: i64,
}

/// Tokens issued by a customer grant.
pub struct Issued {
    pub access: MintedToken,
    /// A new refresh token (from a code, except for single-payment consents; from a refresh
    /// only when rotating).
    pub refresh_token: Option<String>,
    /// OpenID Connect ID token, when `openid` was asked for (code grant only).
    pub id_token: Option<String>,
    /// The certificate the grant was bound to before this refresh moved it to the
    /// connection's (certificate rotation), base64url thumbprint.
    pub rotated_from: Option<String>,
    pub consent_id: String,
}

/// Everything the grants touch.
pub struct GrantContext<'a> {
    pub store: &'a Store,
    pub state: &'a SharedState,
    pub tokens: &'a TokenService,
    pub settings: GrantSettings,
}

fn unavailable(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::unavailable("shared state", e)
}

fn store_failed(e: StoreError) -> OAuthError {
    if e.is_unavailable() {
        OAuthError::unavailable("database", e)
    } else {
        OAuthError::ServerError(e.to_string())
    }
}

fn refresh_hash(token: &str) -> String {
    authorize::digest(token)
}

fn param<'p>(params: &'p Map<String, Value>, name: &str) -> Option<&'p str> {
    params
        .get(name)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

impl GrantContext<'_> {
    /// Revokes a grant and every live access token issued from it.
    async fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<(), OAuthError> {
        for (jti, exp) in self
            .store
            .revoke_grant(grant_id, now)
            .await
            .map_err(store_failed)?
        {
            self.state
                .revoke(&jti, exp, now)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn usable_consent(
        &self,
        consent_id: &str,
        client: &Client,
        now: i64,
    ) -> Result<ConsentRecord, OAuthError> {
        let consent = self
            .store
            .consent(consent_id)
            .await
            .map_err(store_failed)?
            .filter(|c| c.client_id == client.client_id.as_str())
            .ok_or_else(|| OAuthError::InvalidGrant(format!("consent {consent_id} is unknown")))?;
        consent
            .usable(OffsetDateTime::from_unix_timestamp(now).unwrap_or(OffsetDateTime::UNIX_EPOCH))
            .map_err(|e| OAuthError::InvalidGrant(e.to_string()))?;
        Ok(consent)
    }

    /// The customer a consent's tokens speak for.
    fn customer(consent: &ConsentRecord) -> Result<CustomerGrant, OAuthError> {
        let psu = consent.psu.as_deref().ok_or_else(|| {
            OAuthError::ServerError(format!("consent {} has no customer", consent.consent_id))
        })?;
        Ok(CustomerGrant::new(
            &consent.consent_id,
            &consent.client_id,
            psu,
        ))
    }

    /// RFC 6749 §4.4: a token for the client itself (no customer), with the scopes it asked
    /// for within what its roles `allowed` (see [`client_credentials_scope`]).
    pub fn client_credentials(
        &self,
        client: &Client,
        cert: &VerifiedClientCert,
        requested: Option<&str>,
        allowed: &ScopeSet,
        now: i64,
    ) -> Result<MintedToken, OAuthError> {
        let scope = client_credentials_scope(requested, allowed)?;
        self.tokens.mint(
            &client.client_id,
            scope,
            cert,
            None,
            self.settings.access_token_lifetime,
            now,
        )
    }

    fn mint(
        &self,
        client: &Client,
        cert: &VerifiedClientCert,
        scope: &str,
        customer: &CustomerGrant,
        now: i64,
    ) -> Result<MintedToken, OAuthError> {
        let scope = ScopeSet::parse(scope).map_err(OAuthError::ServerError)?;
        self.tokens.mint(
            &client.client_id,
            scope,
            cert,
            Some(customer),
            self.settings.access_token_lifetime,
            now,
        )
    }

    /// RFC 6749 §4.1.3 with RFC 7636 §4.6. A code is redeemed at its first presentation,
    /// whoever presents it; presented again, it is refused and what it was exchanged for is
    /// revoked (RFC 6749 §4.1.2).
    #[tracing::instrument(skip_all)]
    pub async fn exchange_code(
        &self,
        params: &Map<String, Value>,
        client: &Client,
        cert: &VerifiedClientCert,
        now: i64,
    ) -> Result<Issued, OAuthError> {
        let code = param(params, "code")
            .ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
        let Some(issued) = self
            .state
            .take(&code_key(code), now)
            .await
            .map_err(unavailable)?
        else {
            let used = self
                .state
                .get(&used_code_key(code), now)
                .await
                .map_err(unavailable)?;
            return match used {
                Some(grant_id) => {
                    self.revoke_grant(&grant_id, now).await?;
                    Err(OAuthError::InvalidGrant(
                        "the authorization code was already used; the tokens issued for it \
                         have been revoked"
                            .into(),
                    ))
                }
                None => Err(OAuthError::InvalidGrant(
                    "the authorization code is unknown or has expired".into(),
                )),
            };
        };
        let grant_id = format!("grant-{}", uuid::Uuid::new_v4().simple());
        self.state
            .put(&used_code_key(code), &grant_id, now + USED_CODE_MEMORY, now)
            .await
            .map_err(unavailable)?;
        let issued: IssuedCode = serde_json::from_str(&issued)
            .map_err(|e| OAuthError::ServerError(format!("stored code unreadable: {e}")))?;
        let request = &issued.request;
        if request.client_id != client.client_id.as_str() {
            return Err(OAuthError::InvalidGrant(
                "the authorization code was issued to another client".into(),
            ));
        }
        match param(params, "redirect_uri") {
            Some(uri) if uri == request.redirect_uri => {}
            Some(_) => {
                return Err(OAuthError::InvalidGrant(
                    "redirect_uri differs from the one the code was issued for".into(),
                ));
            }
            None => {
                return Err(OAuthError::InvalidRequest(
                    "redirect_uri is required".into(),
                ));
            }
        }
        let verifier = param(params, "code_verifier")
            .ok_or_else(|| OAuthError::InvalidGrant("code_verifier is required (PKCE)".into()))?;
        if !pkce_matches(verifier, &request.code_challenge) {
            return Err(OAuthError::InvalidGrant(
                "code_verifier does not match the code_challenge (PKCE S256)".into(),
            ));
        }
        let consent = self
            .usable_consent(&request.consent_id, client, now)
            .await?;
        let customer = Self::customer(&consent)?;
        let access = self.mint(client, cert, &request.scope, &customer, now)?;
        let id_token = if request.scope.split(' ').any(|s| s == "openid") {
            Some(self.tokens.mint_id_token(
                &client.client_id,
                &customer,
                request.nonce.clone(),
                issued.auth_time,
                self.settings.access_token_lifetime,
                now,
            )?)
        } else {
            None
        };
        let refresh = random_token()?;
        let consent_expiry = consent.expires_at().map(|t| t.unix_timestamp());
        let expires_at = consent_expiry.map_or(now + self.settings.refresh_token_lifetime, |e| {
            e.min(now + self.settings.refresh_token_lifetime)
        });
        let grant = GrantRecord {
            grant_id: grant_id.clone(),
            client_id: client.client_id.to_string(),
            cert_thumbprint: cert.thumbprint_b64().to_string(),
            consent_id: request.consent_id.clone(),
            scope: request.scope.clone(),
            status: "active".into(),
            created_at: now,
            expires_at,
        };
        self.store
            .insert_grant(&grant, &refresh_hash(&refresh))
            .await
            .map_err(store_failed)?;
        self.store
            .add_grant_token(&grant_id, &access.jti, now + access.expires_in)
            .await
            .map_err(store_failed)?;
        // A payment consent pays once: its grant is recorded (a replayed code must find the
        // access token to revoke) but the client gets nothing to refresh with.
        let refresh_token = (request.consent_kind != Kind::DomesticPayment).then_some(refresh);
        Ok(Issued {
            access,
            refresh_token,
            id_token,
            consent_id: request.consent_id.clone(),
            rotated_from: None,
        })
    }

    /// RFC 6749 §6, bound to the client and certificate of the grant (RFC 8705 §4).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        params: &Map<String, Value>,
        client: &Client,
        cert: &VerifiedClientCert,
        now: i64,
    ) -> Result<Issued, OAuthError> {
        let token = param(params, "refresh_token")
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
        let old_hash = refresh_hash(token);
        let grant = match self
            .store
            .refresh_lookup(&old_hash)
            .await
            .map_err(store_failed)?
        {
            RefreshLookup::Unknown => {
                return Err(OAuthError::InvalidGrant("unknown refresh token".into()));
            }
            RefreshLookup::RotatedOut(grant) => {
                self.revoke_grant(&grant.grant_id, now).await?;
                return Err(OAuthError::InvalidGrant(
                    "this refresh token was rotated out and used again; the whole grant has \
                     been revoked"
                        .into(),
                ));
            }
            RefreshLookup::Active(grant) => grant,
        };
        if grant.status != "active" {
            return Err(OAuthError::InvalidGrant(
                "the grant behind this refresh token has been revoked".into(),
            ));
        }
        if grant.client_id != client.client_id.as_str() {
            return Err(OAuthError::InvalidGrant(
                "the refresh token was issued to another client".into(),
            ));
        }
        let rebinding = grant.cert_thumbprint != cert.thumbprint_b64();
        if rebinding && self.settings.rotation_overlap <= 0 {
            return Err(OAuthError::InvalidGrant(binding_mismatch(&grant, cert)));
        }
        if grant.expires_at <= now {
            return Err(OAuthError::InvalidGrant(
                "the refresh token has expired".into(),
            ));
        }
        let consent = self.usable_consent(&grant.consent_id, client, now).await?;
        let customer = Self::customer(&consent)?;
        let rotated_from = if !rebinding {
            None
        } else {
            self.rotate_certificate(&grant, client, cert, now).await?;
            Some(grant.cert_thumbprint.clone())
        };
        let refresh_token = if self.settings.rotate_refresh_tokens {
            let new = random_token()?;
            let rotated = self
                .store
                .rotate_refresh(&old_hash, &refresh_hash(&new), &grant.grant_id, now)
                .await
                .map_err(store_failed)?;
            if !rotated {
                self.revoke_grant(&grant.grant_id, now).await?;
                return Err(OAuthError::InvalidGrant(
                    "this refresh token was used concurrently; the grant has been revoked".into(),
                ));
            }
            Some(new)
        } else {
            None
        };
        let access = self.mint(client, cert, &grant.scope, &customer, now)?;
        self.store
            .add_grant_token(&grant.grant_id, &access.jti, now + access.expires_in)
            .await
            .map_err(store_failed)?;
        Ok(Issued {
            access,
            refresh_token,
            id_token: None,
            consent_id: grant.consent_id,
            rotated_from,
        })
    }
}

impl GrantContext<'_> {
    /// SPEC §6 rotation: a refresh token bound to the client's certificate A, presented over
    /// its certificate B, moves the grant to B, but only within `rotation_overlap` seconds of
    /// B joining the set, and never once A is revoked (revocation beats rotation).
    async fn rotate_certificate(
        &self,
        grant: &GrantRecord,
        client: &Client,
        cert: &VerifiedClientCert,
        now: i64,
    ) -> Result<(), OAuthError> {
        let mismatch = || binding_mismatch(grant, cert);
        let overlap = self.settings.rotation_overlap;
        if overlap <= 0 {
            return Err(OAuthError::InvalidGrant(mismatch()));
        }
        let old = certificate_revocation_key(&grant.cert_thumbprint);
        match self.state.first_revoked(&[&old]).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                return Err(OAuthError::InvalidGrant(format!(
                    "{}; certificate {} was revoked, and rotation does not outlive a revocation",
                    mismatch(),
                    grant.cert_thumbprint
                )));
            }
            Err(_) => {
                return Err(OAuthError::TemporarilyUnavailable(
                    "shared state is unavailable: whether the refresh token's certificate was \
                     revoked cannot be told now; try again"
                        .into(),
                ));
            }
        }
        let set = self
            .store
            .client_certificates_of(&client.client_id)
            .await
            .map_err(store_failed)?;
        let added = set
            .iter()
            .find(|c| {
                c.record.thumbprint == cert.thumbprint_b64() && c.status == CertStatus::Active
            })
            .and_then(|c| clock::parse(&c.added_at))
            .map(|t| t.unix_timestamp());
        match added {
            Some(added) if now - added <= overlap => {}
            _ => {
                return Err(OAuthError::InvalidGrant(format!(
                    "{}; the {overlap} s rotation window after that certificate joined the \
                     client's set has passed",
                    mismatch()
                )));
            }
        }
        let moved = self
            .store
            .rebind_grant(
                &grant.grant_id,
                &grant.cert_thumbprint,
                cert.thumbprint_b64(),
            )
            .await
            .map_err(store_failed)?;
        if moved {
            Ok(())
        } else {
            Err(OAuthError::InvalidGrant(
                "the grant was moved by a concurrent refresh; use its newest tokens".into(),
            ))
        }
    }

    /// RFC 7009 for refresh tokens: revokes the grant (and its access tokens) if `token` is one
    /// of `client`'s refresh tokens; an unknown token is not an error (RFC 7009 §2.2).
    pub async fn revoke_refresh_token(
        &self,
        token: &str,
        client: &Client,
        now: i64,
    ) -> Result<(), OAuthError> {
        let grant = match self
            .store
            .refresh_lookup(&refresh_hash(token))
            .await
            .map_err(store_failed)?
        {
            RefreshLookup::Unknown => return Ok(()),
            RefreshLookup::Active(g) | RefreshLookup::RotatedOut(g) => g,
        };
        if grant.client_id != client.client_id.as_str() {
            return Err(OAuthError::UnauthorizedClient(
                "the token was not issued to this client".into(),
            ));
        }
        self.revoke_grant(&grant.grant_id, now).await
    }
}

/// Issues a code for an approved request and stores it for one redemption.
pub async fn issue_code(
    state: &SharedState,
    issued: &IssuedCode,
    now: i64,
) -> Result<String, OAuthError> {
    let code = random_token()?;
    let value = serde_json::to_string(issued)
        .map_err(|e| OAuthError::ServerError(format!("code not storable: {e}")))?;
    state
        .put(
            &code_key(&code),
            &value,
            now + authorize::CODE_LIFETIME,
            now,
        )
        .await
        .map_err(unavailable)?;
    Ok(code)
}

/// Why a refresh token is refused over a certificate it is not bound to.
fn binding_mismatch(grant: &GrantRecord, cert: &VerifiedClientCert) -> String {
    format!(
        "the refresh token is bound to certificate thumbprint {}, but this connection's \
         certificate has thumbprint {}",
        grant.cert_thumbprint,
        cert.thumbprint_b64()
    )
}
