//! The authorization server and the token checks of the guard chain.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::*;

type Form<'a> = &'a [(&'a str, &'a str)];

async fn consent_get(app: &TestApp, c: &CertFiles, token: &str) -> Res<reqwest::Response> {
    Ok(app
        .client(c)?
        .post(format!("{}{CONSENTS}", app.mtls))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(AAC_BODY)
        .send()
        .await?)
}

fn www_authenticate(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn expect_invalid_token(res: reqwest::Response, needle: &str) -> TestResult {
    assert_eq!(res.status(), 401);
    let www = www_authenticate(&res);
    assert!(www.contains(r#"error="invalid_token""#), "{www}");
    let body: Value = res.json().await?;
    let message = body["Message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "expected {needle:?} in {body}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Header.Invalid");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_token_is_an_at_jwt_bound_to_the_certificate_it_was_requested_over() -> TestResult {
    let app = spawn_app().await?;
    let res = app
        .client(&app.tpp_a)?
        .post(format!("{}/token", app.mtls))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tpp-a"),
            ("scope", "accounts payments"),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let body: Value = res.json().await?;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "accounts payments");
    let token = body["access_token"].as_str().ok_or("no token")?;
    let header = header_of(token)?;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let claims = claims_of(token)?;
    assert_eq!(claims["cnf"]["x5t#S256"], app.tpp_a.thumbprint()?);
    assert_eq!(claims["client_id"], "tpp-a");
    assert_eq!(claims["aud"], app.settings.server.mtls_url);
    assert_eq!(claims["iss"], app.settings.server.public_url);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_that_cannot_be_honoured_get_rfc_6749_errors() -> TestResult {
    let app = spawn_app().await?;
    let http = app.client(&app.tpp_a)?;
    let cases: [(Form, u16, &str); 6] = [
        (
            &[("grant_type", "client_credentials"), ("client_id", "tpp-a")],
            400,
            "invalid_scope",
        ),
        (
            &[("grant_type", "password"), ("client_id", "tpp-a")],
            400,
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "client_credentials")],
            400,
            "invalid_request",
        ),
        (
            &[("grant_type", "client_credentials"), ("client_id", "tpp-b")],
            401,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
            ],
            401,
            "invalid_client",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "tpp-a"),
                ("scope", "openid"),
            ],
            400,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in cases {
        let res = http
            .post(format!("{}/token", app.mtls))
            .form(form)
            .send()
            .await?;
        assert_eq!(res.status(), status, "{form:?}");
        assert!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"))
        );
        let body: Value = res.json().await?;
        assert_eq!(body["error"], error, "{form:?}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
    let aisp = app.client(&app.aisp_only)?;
    let res = aisp
        .post(format!("{}/token", app.mtls))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tpp-aisp"),
            ("scope", "payments"),
        ])
        .send()
        .await?;
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "invalid_scope");
    // No scope: refused, naming what this client may ask for (least privilege).
    let res = aisp
        .post(format!("{}/token", app.mtls))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tpp-aisp"),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "invalid_scope");
    assert_eq!(
        body["error_description"],
        "scope is required; this client may ask for: accounts"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_over_another_clients_certificate_is_refused_naming_the_binding_mismatch()
-> TestResult {
    let app = spawn_app().await?;
    let stolen = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let res = consent_get(&app, &app.tpp_b, &stolen).await?;
    let www = www_authenticate(&res);
    assert!(www.contains("binding mismatch"), "{www}");
    assert!(www.contains(&app.tpp_b.thumbprint()?), "{www}");
    expect_invalid_token(res, "thumbprint").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_tampered_signature_is_refused() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let (body, sig) = token.rsplit_once('.').ok_or("not a JWT")?;
    let mut sig = URL_SAFE_NO_PAD.decode(sig)?;
    sig[10] ^= 0x01;
    let tampered = format!("{body}.{}", URL_SAFE_NO_PAD.encode(sig));
    expect_invalid_token(consent_get(&app, &app.tpp_a, &tampered).await?, "signature").await?;

    let mut claims = claims_of(&token)?;
    claims["scope"] = json!("accounts payments fundsconfirmations");
    let (header, _) = token.split_once('.').ok_or("not a JWT")?;
    let (_, sig) = token.rsplit_once('.').ok_or("not a JWT")?;
    let swapped = format!(
        "{header}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    expect_invalid_token(consent_get(&app, &app.tpp_a, &swapped).await?, "signature").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_and_hs256_signed_with_the_public_key_are_refused() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let header = header_of(&token)?;
    let claims = claims_of(&token)?;
    let enc = |v: &Value| -> Res<String> { Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(v)?)) };

    let none = format!(
        "{}.{}.",
        enc(&json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}))?,
        enc(&claims)?
    );
    expect_invalid_token(consent_get(&app, &app.tpp_a, &none).await?, "alg").await?;

    // The classic confusion attack: HMAC keyed with the public key the server publishes.
    let jwks: Value = app
        .anonymous()?
        .get(format!("{}/jwks", app.public))
        .send()
        .await?
        .json()
        .await?;
    let public_key = serde_json::to_vec(&jwks["keys"][0])?;
    let input = format!(
        "{}.{}",
        enc(&json!({"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}))?,
        enc(&claims)?
    );
    let key = openssl::pkey::PKey::hmac(&public_key)?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
    signer.update(input.as_bytes())?;
    let hs256 = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signer.sign_to_vec()?));
    expect_invalid_token(consent_get(&app, &app.tpp_a, &hs256).await?, "alg").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_wrong_audience_issuer_type_or_lifetime_are_refused() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let header = header_of(&token)?;
    let claims = claims_of(&token)?;
    let t = now();
    let variant = |key: &str, value: Value| {
        let mut c = claims.clone();
        c[key] = value;
        c
    };
    let cases = [
        (
            header.clone(),
            variant("aud", json!("https://other-bank.example")),
            "aud",
        ),
        (
            header.clone(),
            variant("iss", json!("https://evil.example")),
            "iss",
        ),
        (header.clone(), variant("exp", json!(t - 1)), "expired"),
        (
            header.clone(),
            variant("nbf", json!(t + 600)),
            "not valid yet",
        ),
        (
            json!({"alg": "ES256", "typ": "JWT", "kid": header["kid"]}),
            claims.clone(),
            "typ",
        ),
        (
            json!({"alg": "ES256", "typ": "at+jwt", "kid": "someone-elses"}),
            claims.clone(),
            "kid",
        ),
    ];
    // A correctly forged control proves the forging itself is sound.
    let control = app.forge(header.clone(), &claims)?;
    assert_eq!(consent_get(&app, &app.tpp_a, &control).await?.status(), 201);
    for (h, c, needle) in cases {
        let forged = app.forge(h, &c)?;
        expect_invalid_token(consent_get(&app, &app.tpp_a, &forged).await?, needle).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    assert_eq!(consent_get(&app, &app.tpp_a, &token).await?.status(), 201);
    let http = app.client(&app.tpp_a)?;
    let res = http
        .post(format!("{}/revoke", app.mtls))
        .form(&[("token", token.as_str()), ("client_id", "tpp-a")])
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    expect_invalid_token(consent_get(&app, &app.tpp_a, &token).await?, "revoked").await?;
    let res = http
        .post(format!("{}/revoke", app.mtls))
        .form(&[("token", "not-a-token"), ("client_id", "tpp-a")])
        .send()
        .await?;
    assert_eq!(
        res.status(),
        200,
        "RFC 7009: an invalid token is not an error"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_not_revoke_another_clients_token() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let res = app
        .client(&app.tpp_b)?
        .post(format!("{}/revoke", app.mtls))
        .form(&[("token", token.as_str()), ("client_id", "tpp-b")])
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(consent_get(&app, &app.tpp_a, &token).await?.status(), 201);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_client_is_refused_at_token_and_at_resources() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let out = app.cli(&["clients", "suspend", "tpp-a"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let res = app
        .client(&app.tpp_a)?
        .post(format!("{}/token", app.mtls))
        .form(&[("grant_type", "client_credentials"), ("client_id", "tpp-a")])
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("suspended"))
    );
    expect_invalid_token(consent_get(&app, &app.tpp_a, &token).await?, "suspended").await?;

    assert!(app.cli(&["clients", "activate", "tpp-a"])?.status.success());
    assert_eq!(consent_get(&app, &app.tpp_a, &token).await?.status(), 201);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_shows_the_binding_to_the_owner_and_nothing_to_anyone_else() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let own: Value = app
        .client(&app.tpp_a)?
        .post(format!("{}/introspect", app.mtls))
        .form(&[("token", token.as_str()), ("client_id", "tpp-a")])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(own["active"], true);
    assert_eq!(own["cnf"]["x5t#S256"], app.tpp_a.thumbprint()?);
    assert_eq!(own["scope"], "accounts");

    let res = app
        .client(&app.tpp_b)?
        .post(format!("{}/introspect", app.mtls))
        .header("x-fapi-interaction-id", "introspect-foreign")
        .form(&[("token", token.as_str()), ("client_id", "tpp-b")])
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let foreign: Value = res.json().await?;
    assert_eq!(foreign, json!({"active": false}));
    let events = app.audit_of("introspect-foreign").await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "denied");
    assert_eq!(events[0].client_id.as_deref(), Some("tpp-b"));

    let res = app
        .client(&app.tpp_b)?
        .post(format!("{}/introspect", app.mtls))
        .form(&[("token", token.as_str()), ("client_id", "tpp-a")])
        .send()
        .await?;
    assert_eq!(
        res.status(),
        401,
        "tpp-b cannot introspect by claiming to be tpp-a"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_client_gets_and_uses_a_bound_token() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.self_signed, "tpp-self", "accounts").await?;
    assert_eq!(
        claims_of(&token)?["cnf"]["x5t#S256"],
        app.self_signed.thumbprint()?
    );
    assert_eq!(
        consent_get(&app, &app.self_signed, &token).await?.status(),
        201
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps256_signing_is_configurable_and_its_key_is_published() -> TestResult {
    let app = spawn_app_with(|s| s.oauth.signing_alg = "PS256".into()).await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let header = header_of(&token)?;
    assert_eq!(header["alg"], "PS256");
    let jwks: Value = app
        .anonymous()?
        .get(format!("{}/jwks", app.public))
        .send()
        .await?
        .json()
        .await?;
    let key = jwks["keys"]
        .as_array()
        .ok_or("no keys")?
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .ok_or("signing key not published")?;
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str()),
        (Some("RSA"), Some("PS256"))
    );
    assert_eq!(consent_get(&app, &app.tpp_a, &token).await?.status(), 201);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_may_introspect_any_token_but_a_look_alike_from_another_anchor_may_not()
-> TestResult {
    let (app, partner_ca) = spawn_app_with_partner_ca().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let introspect = |c: &CertFiles| -> Res<_> {
        Ok(app
            .client(c)?
            .post(format!("{}/introspect", app.mtls))
            .header("x-fapi-interaction-id", "operator-introspect")
            .form(&[("token", token.as_str())])
            .send())
    };

    let auditor = app.issue_trusted(
        "auditor",
        obgate::pki::CertSpec::operator("carol-auditor", &["auditor".to_string()], now()),
    )?;
    let res = introspect(&auditor)?.await?;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await?;
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "tpp-a");
    assert_eq!(body["cnf"]["x5t#S256"], app.tpp_a.thumbprint()?);
    let event = &app.audit_of("operator-introspect").await?[0];
    assert_eq!(event.outcome, "allowed");
    assert!(
        event
            .cert_subject
            .as_deref()
            .is_some_and(|s| s.contains("O=obgate operators"))
    );

    let look_alike = obgate::pki::issue(
        &obgate::pki::CertSpec::operator("mallory", &["auditor".to_string()], now()),
        Some(&partner_ca),
    )?;
    let (cert, key) = look_alike.write(&app.path("pki"), "mallory")?;
    let res = introspect(&CertFiles { cert, key })?.await?;
    assert_eq!(
        res.status(),
        400,
        "not an operator, so it must name itself as a client"
    );
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "invalid_request");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_ca_that_shares_the_issuers_name_does_not_authenticate_the_client() -> TestResult
{
    // Two trusted CAs both called "test CA": the issuer is told apart by its key, not its DN
    // (keycloak#52801 is this, matched by DN strings).
    let (app, twin_ca) = spawn_app_with_second_ca("test CA").await?;
    let twin = obgate::pki::issue(
        &obgate::pki::CertSpec::tpp("Alpha Ltd", "0015800001ALPHA", "tpp-a", now()),
        Some(&twin_ca),
    )?;
    let (cert, key) = twin.write(&app.path("pki"), "same-name-twin")?;
    let res = app
        .client(&CertFiles { cert, key })?
        .post(format!("{}/token", app.mtls))
        .form(&[("grant_type", "client_credentials"), ("client_id", "tpp-a")])
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "invalid_client", "{body}");
    // The registered certificate still works.
    app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registered_subject_from_another_trusted_ca_does_not_authenticate_the_client()
-> TestResult {
    let (app, partner_ca) = spawn_app_with_partner_ca().await?;
    // Same subject as tpp-a, different (but trusted) issuer.
    let twin = obgate::pki::issue(
        &obgate::pki::CertSpec::tpp("Alpha Ltd", "0015800001ALPHA", "tpp-a", now()),
        Some(&partner_ca),
    )?;
    let (cert, key) = twin.write(&app.path("pki"), "twin")?;
    let res = app
        .client(&CertFiles { cert, key })?
        .post(format!("{}/token", app.mtls))
        .form(&[("grant_type", "client_credentials"), ("client_id", "tpp-a")])
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await?;
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("issuer")),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_that_are_not_one_clean_form_are_invalid_requests() -> TestResult {
    let app = spawn_app().await?;
    let http = app.client(&app.tpp_a)?;
    let cases = [
        (
            "application/json",
            r#"{"grant_type":"client_credentials","client_id":"tpp-a"}"#,
        ),
        (
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&grant_type=password&client_id=tpp-a",
        ),
    ];
    for (content_type, body) in cases {
        let res = http
            .post(format!("{}/token", app.mtls))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await?;
        assert_eq!(err["error"], "invalid_request", "{body}: {err}");
    }
    Ok(())
}

/// Moves the gateway's clock to the start of the next rate-limit minute, so the next few
/// requests fall inside one window.
pub fn inside_one_minute(app: &TestApp) {
    let now = app.clock.unix();
    app.clock.advance(60 - now.rem_euclid(60));
}

#[tokio::test]
async fn a_client_over_its_per_minute_limit_gets_429_with_retry_after() -> TestResult {
    let app = spawn_app_with(with_policy(|t| {
        format!("{t}\n[rate_limits]\nper_client_per_minute = 1000\n[rate_limits.clients]\n\"tpp-a\" = 3\n")
    }))
    .await?;
    inside_one_minute(&app);
    for _ in 0..3 {
        app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    }
    let res = app
        .client(&app.tpp_a)?
        .post(format!("{}/token", app.mtls))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tpp-a"),
            ("scope", "accounts"),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), 429);
    let retry: i64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("no Retry-After")?;
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = res.json().await?;
    assert_eq!(
        body["Errors"][0]["ErrorCode"],
        json!("UK.OBIE.Rules.RateLimitExceeded")
    );
    // Another client has its own allowance.
    app.token(&app.tpp_b, "tpp-b", "accounts").await?;
    let refused = app
        .audit()
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("rate_limited"))
        .count();
    assert_eq!(refused, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_rotated_at_one_instance_verifies_at_the_other_without_a_restart()
-> TestResult {
    let app = spawn_app().await?;
    let b = app.another_instance().await?;
    let tpp = crate::flows::Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let at_b = tpp.at(&b);
    let body: Value = serde_json::from_str(AAC_BODY)?;
    let before = app.token(&app.tpp_a, "tpp-a", "accounts").await?;

    // The operator's rotation on the shared keys directory, then A's SIGHUP.
    let dir = &app.settings.oauth.keys_dir;
    std::fs::rename(dir.join("es256.pem"), dir.join("es256-2026-11.pem"))?;
    app.reloader.reload().await?;
    let after = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let (old_kid, new_kid) = (
        header_of(&before)?["kid"].clone(),
        header_of(&after)?["kid"].clone(),
    );
    assert_ne!(
        old_kid, new_kid,
        "A signs with a new key after the rotation"
    );

    // B has never seen the new key: the token prompts it to re-read the directory (at most
    // once a second, so its first sight may come just too soon after its own start).
    let t0 = std::time::Instant::now();
    loop {
        let (status, v) = at_b.post_json(&after, CONSENTS, None, &body).await?;
        if status == 201 {
            break;
        }
        assert_eq!(status, 401, "{v}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "B still refuses A's new key after 2 s: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Tokens signed before the rotation still verify everywhere; B publishes both keys.
    assert_eq!(at_b.post_json(&before, CONSENTS, None, &body).await?.0, 201);
    assert_eq!(tpp.post_json(&before, CONSENTS, None, &body).await?.0, 201);
    let jwks: Value = app
        .anonymous()?
        .get(format!("{}/jwks", b.public))
        .send()
        .await?
        .json()
        .await?;
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .ok_or("no keys")?
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        kids.contains(&&old_kid) && kids.contains(&&new_kid),
        "{jwks}"
    );

    // A kid nobody has is still refused, however often it is tried.
    let [_, payload, signature] = after.split('.').collect::<Vec<_>>()[..] else {
        return Err("not a JWS".into());
    };
    let forged_header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "made-up"});
    let forged = format!(
        "{}.{payload}.{signature}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_header)?)
    );
    for _ in 0..3 {
        let res = consent_get(&app, &app.tpp_a, &forged).await?;
        expect_invalid_token(res, "kid").await?;
    }
    Ok(())
}
