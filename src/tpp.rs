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
        None => {
            let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let x509 = openssl::x509::X509::from_pem(&pem)
                .map_err(|_| anyhow!("{}: not a PEM certificate", cert.display()))?;
            x509.subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .and_then(|e| e.data().to_string().ok())
                .ok_or_else(|| anyhow!("{}: no CN; pass --client-id", cert.display()))?
        }
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
