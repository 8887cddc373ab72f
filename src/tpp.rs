//! The TPP side: what a TPP developer runs first, built on the `oauth2` crate over reqwest with
//! the client certificate, exactly as a TPP's own code would be.

use std::path::Path;

use anyhow::{Context, anyhow};
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, RequestTokenError, Scope, TokenResponse, TokenUrl};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Response(#[from] http::Error),
}

/// An HTTP client presenting `cert`/`key` and trusting only `ca` for the server.
pub fn mtls_client(cert: &Path, key: &Path, ca: &Path) -> anyhow::Result<reqwest::Client> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let x509 = openssl::x509::X509::from_pem(&read(cert)?)
        .with_context(|| format!("--cert {}: not a PEM certificate", cert.display()))?;
    let private = openssl::pkey::PKey::private_key_from_pem(&read(key)?)
        .with_context(|| format!("--key {}: not a PEM private key", key.display()))?;
    if !x509
        .public_key()
        .is_ok_and(|public| public.public_eq(&private))
    {
        return Err(anyhow!(
            "--key {} is not the private key of the certificate in --cert {}",
            key.display(),
            cert.display()
        ));
    }
    let identity =
        reqwest::Identity::from_pkcs8_pem(&read(cert)?, &read(key)?).with_context(|| {
            format!(
                "{} / {}: not a PEM certificate and PKCS#8 key pair",
                cert.display(),
                key.display()
            )
        })?;
    let ca_cert = reqwest::Certificate::from_pem(&read(ca)?)
        .with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
    Ok(reqwest::Client::builder()
        .tls_backend_native()
        .identity(identity)
        .tls_certs_only([ca_cert])
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Sends an `oauth2` request through `client` and rebuilds the `oauth2` response.
async fn send(
    client: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TransportError> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut rebuilt = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        rebuilt = rebuilt.header(name, value);
    }
    Ok(rebuilt.body(response.bytes().await?.to_vec())?)
}

/// Fetches a client-credentials token over mTLS and returns the token response as JSON.
pub async fn client_credentials_token(
    cert: &Path,
    key: &Path,
    ca: &Path,
    mtls_url: &str,
    client_id: Option<&str>,
    scope: Option<&str>,
) -> anyhow::Result<String> {
    let client_id = match client_id {
        Some(id) => id.to_string(),
        None => client_id_of(cert)?,
    };
    let http = mtls_client(cert, key, ca)?;
    let oauth = BasicClient::new(ClientId::new(client_id))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(TokenUrl::new(format!("{mtls_url}/token")).context("--url")?);
    let mut request = oauth.exchange_client_credentials();
    for s in scope.unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        request = request.add_scope(Scope::new(s.to_string()));
    }
    let sender = |r: oauth2::HttpRequest| send(&http, r);
    match request.request_async(&sender).await {
        Ok(token) => Ok(serde_json::json!({
            "access_token": token.access_token().secret(),
            "token_type": token.token_type().as_ref(),
            "expires_in": token.expires_in().map(|d| d.as_secs()),
            "scope": token.scopes().map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        })
        .to_string()),
        Err(RequestTokenError::ServerResponse(e)) => Err(anyhow!(
            "the token endpoint refused: {}{}",
            e.error(),
            e.error_description()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        )),
        Err(RequestTokenError::Request(e)) => Err(anyhow!("could not reach {mtls_url}/token: {e}")),
        Err(e) => Err(anyhow!("token request failed: {e}")),
    }
}

/// What the code grant's token response adds when `openid` was asked for (OpenID Connect
/// Core §3.1.3.3).
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub struct IdTokenFields {
    pub id_token: Option<String>,
}

impl oauth2::ExtraTokenFields for IdTokenFields {}

type OidcTokenResponse =
    oauth2::StandardTokenResponse<IdTokenFields, oauth2::basic::BasicTokenType>;

/// The `oauth2` client of the code grant, reading the ID token too.
type OidcClient = oauth2::Client<
    oauth2::basic::BasicErrorResponse,
    OidcTokenResponse,
    oauth2::basic::BasicTokenIntrospectionResponse,
    oauth2::StandardRevocableToken,
    oauth2::basic::BasicRevocationErrorResponse,
>;

/// A consent flow between its pushed request and the customer's return.
pub struct PendingFlow {
    pub authorize_url: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub consent_id: String,
    /// What the TPP must find in the redirect: `state`, and the issuer as `iss` (RFC 9207).
    pub state: String,
    pub issuer: String,
    pkce_verifier: oauth2::PkceCodeVerifier,
    token_url: String,
}

/// The tokens a finished consent flow yields.
#[derive(Debug, serde::Serialize)]
pub struct FlowTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// The OpenID Connect ID token, when `openid` was in the scope.
    pub id_token: Option<String>,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    pub consent_id: String,
}

/// Pushes the authorization request (RFC 9126) with a fresh PKCE S256 challenge and state,
/// and returns the URL to send the customer's browser to (`authorization_endpoint` with
/// `client_id` and `request_uri`). `issuer` is what the redirect's `iss` must be.
#[allow(clippy::too_many_arguments)]
pub async fn start_consent_flow(
    http: &reqwest::Client,
    mtls_url: &str,
    issuer: &str,
    authorization_endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    consent_id: &str,
) -> anyhow::Result<PendingFlow> {
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let state = oauth2::CsrfToken::new_random();
    let claims = serde_json::json!({
        "id_token": {"openbanking_intent_id": {"value": consent_id, "essential": true}}
    })
    .to_string();
    let form = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", state.secret().as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", challenge.method().as_str()),
        ("claims", claims.as_str()),
    ];
    let res = http
        .post(format!("{mtls_url}/par"))
        .form(&form)
        .send()
        .await
        .with_context(|| format!("could not reach {mtls_url}/par"))?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.context("/par answered without JSON")?;
    if status != reqwest::StatusCode::CREATED {
        return Err(anyhow!(
            "/par refused ({status}): {}: {}",
            body["error"].as_str().unwrap_or("?"),
            body["error_description"].as_str().unwrap_or("")
        ));
    }
    let request_uri = body["request_uri"]
        .as_str()
        .ok_or_else(|| anyhow!("/par answered without request_uri"))?;
    let query =
        serde_urlencoded::to_string([("client_id", client_id), ("request_uri", request_uri)])?;
    Ok(PendingFlow {
        authorize_url: format!("{authorization_endpoint}?{query}"),
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        consent_id: consent_id.to_string(),
        state: state.secret().clone(),
        issuer: issuer.to_string(),
        pkce_verifier: verifier,
        token_url: format!("{mtls_url}/token"),
    })
}

/// Takes the URL the customer's browser was sent back to, checks `state` and `iss`, and
/// exchanges the code (with the PKCE verifier) for certificate-bound tokens.
pub async fn finish_consent_flow(
    http: &reqwest::Client,
    flow: PendingFlow,
    callback: &str,
) -> anyhow::Result<FlowTokens> {
    let not_the_callback = |what: &str| {
        anyhow!(
            "{what}: paste the whole address the browser was sent back to after Allow or \
             Deny; it starts with {}?",
            flow.redirect_uri
        )
    };
    let callback = callback.trim();
    if callback.is_empty() {
        return Err(not_the_callback("nothing was pasted"));
    }
    let query = callback.split_once('?').map_or(callback, |(_, q)| q);
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| not_the_callback("that is not an address with a query"))?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("code").is_none() && get("error").is_none() {
        return Err(not_the_callback(
            "that address carries neither a code nor an error",
        ));
    }
    if let Some(error) = get("error") {
        return Err(anyhow!(
            "the bank answered {error}: {}",
            get("error_description").unwrap_or("")
        ));
    }
    if get("state") != Some(flow.state.as_str()) {
        return Err(anyhow!(
            "state in the callback does not match the request: not our redirect"
        ));
    }
    if get("iss") != Some(flow.issuer.as_str()) {
        return Err(anyhow!(
            "iss in the callback is {:?}, not {} (RFC 9207 mix-up defence)",
            get("iss"),
            flow.issuer
        ));
    }
    let code = get("code").ok_or_else(|| anyhow!("the callback carries no code"))?;
    let oauth = OidcClient::new(ClientId::new(flow.client_id.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(TokenUrl::new(flow.token_url.clone())?);
    let redirect = oauth2::RedirectUrl::new(flow.redirect_uri.clone())?;
    let sender = |r: oauth2::HttpRequest| send(http, r);
    let token = oauth
        .exchange_code(oauth2::AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(flow.pkce_verifier)
        .set_redirect_uri(std::borrow::Cow::Owned(redirect))
        .request_async(&sender)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(e) => anyhow!(
                "the token endpoint refused: {}{}",
                e.error(),
                e.error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            other => anyhow!("token request failed: {other}"),
        })?;
    Ok(FlowTokens {
        access_token: token.access_token().secret().clone(),
        refresh_token: token.refresh_token().map(|r| r.secret().clone()),
        id_token: token.extra_fields().id_token.clone(),
        expires_in: token.expires_in().map(|d| d.as_secs()),
        scope: token
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        consent_id: flow.consent_id,
    })
}

/// Creates a consent for `scope` with a client-credentials token, as a TPP does before the
/// customer is asked: every read permission (accounts), a payment of `amount` to a demo payee
/// (payments), or a funds check on `debtor_account` (fundsconfirmations).
pub async fn create_consent(
    http: &reqwest::Client,
    mtls_url: &str,
    access_token: &str,
    scope: &str,
    amount: &str,
    debtor_account: Option<&str>,
) -> anyhow::Result<String> {
    let (path, body) = match scope {
        "accounts" => (
            "/open-banking/v3.1/aisp/account-access-consents",
            serde_json::json!({"Data": {"Permissions": [
                "ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail",
                "ReadTransactionsCredits", "ReadTransactionsDebits"]}, "Risk": {}}),
        ),
        "payments" => (
            "/open-banking/v3.1/pisp/domestic-payment-consents",
            serde_json::json!({"Data": {"Initiation": {
                "InstructionIdentification": format!("obgate-{}", uuid::Uuid::new_v4().simple().to_string().get(..8).unwrap_or("0")),
                "EndToEndIdentification": "OBGATE.CLI",
                "InstructedAmount": {"Amount": amount, "Currency": "GBP"},
                "CreditorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                    "Identification": "08080021325698", "Name": "ACME Inc"},
                "RemittanceInformation": {"Reference": "OBGATE-CLI"}}},
                "Risk": {"PaymentContextCode": "EcommerceGoods"}}),
        ),
        "fundsconfirmations" => {
            let account = debtor_account.ok_or_else(|| {
                anyhow!(
                    "--debtor-account (sort code + account number) is needed for fundsconfirmations"
                )
            })?;
            (
                "/open-banking/v3.1/cbpii/funds-confirmation-consents",
                serde_json::json!({"Data": {"DebtorAccount": {
                    "SchemeName": "UK.OBIE.SortCodeAccountNumber", "Identification": account}}}),
            )
        }
        other => {
            return Err(anyhow!(
                "--scope {other:?}: use accounts, payments or fundsconfirmations"
            ));
        }
    };
    let res = http
        .post(format!("{mtls_url}{path}"))
        .bearer_auth(access_token)
        .header(
            "x-idempotency-key",
            uuid::Uuid::new_v4().simple().to_string(),
        )
        .json(&body)
        .send()
        .await
        .with_context(|| format!("could not reach {mtls_url}{path}"))?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.context("consent answer without JSON")?;
    if status != reqwest::StatusCode::CREATED {
        return Err(anyhow!("creating the consent failed ({status}): {body}"));
    }
    body["Data"]["ConsentId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the consent answer has no ConsentId"))
}

/// The client id a certificate stands for by default: its CN.
pub fn client_id_of(cert: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let x509 = openssl::x509::X509::from_pem(&pem)
        .map_err(|_| anyhow!("{}: not a PEM certificate", cert.display()))?;
    crate::pki::common_name(&x509)
        .ok_or_else(|| anyhow!("{}: no CN; pass --client-id", cert.display()))
}
