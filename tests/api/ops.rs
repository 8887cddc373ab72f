//! The ops listener: metrics and health.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_tokens_refusals_handshake_failures_and_certificate_expiry() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let res = app
        .client(&app.tpp_b)?
        .post(format!("{}{CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .body(AAC_BODY)
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    let rogue = app.issue_untrusted("rogue")?;
    assert!(
        app.client(&rogue)?
            .get(format!("{}/jwks", app.mtls))
            .send()
            .await
            .is_err()
    );
    app.await_audit(|e| e.route == "(tls-handshake)").await?;

    let odd = reqwest::Method::from_bytes(b"BREW")?;
    let res = app
        .anonymous()?
        .request(odd, format!("{}/jwks", app.public))
        .send()
        .await?;
    assert_eq!(res.status(), 405, "a known route, an undeclared method");

    let text = reqwest::get(format!("{}/metrics", app.ops))
        .await?
        .text()
        .await?;
    assert!(
        !text.contains("BREW"),
        "a client-chosen method became a label"
    );
    assert!(text.contains(r#"method="OTHER""#));
    for line in [
        r#"obgate_tokens_issued_total{grant_type="client_credentials"} 1"#,
        r#"obgate_http_requests_total{method="POST",route="/token",status="200"} 1"#,
        r#"obgate_token_rejections_total{reason="binding_mismatch"} 1"#,
        r#"obgate_client_cert_failures_total{reason="untrusted_issuer"} 1"#,
        "obgate_audit_events_total 3",
        r#"obgate_http_request_duration_seconds_count{method="POST",route="/token"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let expiry = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"obgate_client_cert_expiry_seconds{client_id="tpp-a"} "#))
        .ok_or("no expiry gauge for tpp-a")?;
    let expiry: f64 = expiry.parse()?;
    assert!(expiry > now() as f64 + 300.0 * DAY as f64, "{expiry}");

    let ready = reqwest::get(format!("{}/readyz", app.ops)).await?;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await?;
    assert_eq!(ready["audit"], "ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_are_found_with_or_without_a_trailing_slash() -> TestResult {
    let app = spawn_app().await?;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let res = plain.get(format!("{}/docs", app.ops)).send().await?;
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("/docs/")
    );
    let followed = reqwest::get(format!("{}/docs", app.ops)).await?;
    assert_eq!(followed.status(), 200);
    assert!(followed.text().await?.contains("swagger"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_method_on_a_known_route_is_405_with_allow() -> TestResult {
    let app = spawn_app().await?;
    let tpp = app.client(&app.tpp_a)?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    for (method, path, allow) in [
        ("GET", "/token".to_string(), "POST"),
        ("TRACE", "/par".to_string(), "POST"),
        ("PUT", format!("{CONSENTS}/aac-1"), "GET, DELETE"),
        (
            "DELETE",
            "/open-banking/v3.1/aisp/accounts".to_string(),
            "GET",
        ),
    ] {
        let res = tpp
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("{}{path}", app.mtls),
            )
            .bearer_auth(&token)
            .send()
            .await?;
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }
    let res = tpp
        .get(format!("{}/no-such-thing", app.mtls))
        .send()
        .await?;
    assert_eq!(res.status(), 404);
    // The authorization server's endpoints live on the mTLS listener; the public one says so.
    let res = app
        .anonymous()?
        .post(format!("{}/token", app.public))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await?;
    let message = body["Message"].as_str().unwrap_or_default();
    assert!(
        message.contains("mTLS listener")
            && message.contains(&format!("{}/token", app.settings.server.mtls_url)),
        "{body}"
    );
    Ok(())
}
