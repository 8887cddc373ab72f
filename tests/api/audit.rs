//! The access log: one event per request, the right outcome and reason, no secrets, a chain
//! that `obgate audit verify` checks, and no response without its event.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_that_reaches_http_leaves_exactly_one_event_with_its_reason_and_no_token()
-> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let aisp_token = app.token(&app.aisp_only, "tpp-aisp", "accounts").await?;
    let a = app.client(&app.tpp_a)?;
    let b = app.client(&app.tpp_b)?;
    let aisp = app.client(&app.aisp_only)?;
    let url = format!("{}{CONSENTS}", app.mtls);
    let payments = format!("{}{PAYMENT_CONSENTS}", app.mtls);

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "i-ok",
            a.post(&url).bearer_auth(&token).body(AAC_BODY),
            201,
            "",
        ),
        (
            "i-binding",
            b.post(&url).bearer_auth(&token).body(AAC_BODY),
            401,
            "binding_mismatch",
        ),
        (
            "i-missing",
            a.post(&url).body(AAC_BODY),
            401,
            "token_missing",
        ),
        (
            "i-garbage",
            a.post(&url).bearer_auth("garbage").body(AAC_BODY),
            401,
            "token_malformed",
        ),
        (
            "i-role",
            aisp.post(&payments)
                .bearer_auth(&aisp_token)
                .header("x-idempotency-key", "k")
                .body(payment_body("1.00")),
            403,
            "policy_role_missing",
        ),
        (
            "i-body",
            a.post(&url).bearer_auth(&token).body("{"),
            400,
            "invalid_body",
        ),
        (
            "i-query",
            a.post(format!("{url}?access_token={token}")).body(AAC_BODY),
            400,
            "token_in_query",
        ),
        (
            "i-token",
            a.post(format!("{}/token", app.mtls))
                .form(&[("grant_type", "client_credentials"), ("client_id", "tpp-b")]),
            401,
            "invalid_client",
        ),
    ];
    for (id, request, status, _) in &cases {
        let res = request
            .try_clone()
            .ok_or("unclonable request")?
            .header("x-fapi-interaction-id", *id)
            .send()
            .await?;
        assert_eq!(res.status(), *status, "{id}");
    }
    for (id, _, status, reason) in &cases {
        let events = app.audit_of(id).await?;
        assert_eq!(events.len(), 1, "{id}: {events:?}");
        let e = &events[0];
        assert_eq!(e.status, i64::from(*status), "{id}");
        if reason.is_empty() {
            assert_eq!(e.outcome, "allowed", "{id}");
            assert_eq!(e.client_id.as_deref(), Some("tpp-a"));
            assert!(
                e.consent_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with("aac-"))
            );
            assert_eq!(e.route, CONSENTS);
        } else {
            assert_eq!(e.outcome, "denied", "{id}");
            assert_eq!(e.reason.as_deref(), Some(*reason), "{id}");
        }
        assert!(
            e.cert_thumbprint.is_some() && e.cert_subject.is_some() && e.cert_serial.is_some(),
            "{id}"
        );
    }
    for unproven in ["i-binding", "i-token"] {
        let e = &app.audit_of(unproven).await?[0];
        assert_eq!(
            e.client_id, None,
            "{unproven}: a client id nobody proved is not recorded"
        );
    }
    let binding = &app.audit_of("i-binding").await?[0];
    assert_eq!(
        binding.cert_thumbprint.as_deref(),
        Some(app.tpp_b.thumbprint()?.as_str())
    );
    assert_eq!(
        binding.token_jti.as_deref(),
        claims_of(&token)?["jti"].as_str()
    );

    let everything = serde_json::to_string(&app.audit().await?)?;
    for secret in [&token, &aisp_token] {
        let signature = secret.rsplit('.').next().ok_or("not a JWT")?;
        assert!(
            !everything.contains(signature),
            "a token reached the audit log"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resource_data_leaves_when_the_audit_log_cannot_be_written() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let url = format!("{}{CONSENTS}", app.mtls);
    app.sql("ALTER TABLE audit_events RENAME TO audit_events_gone")
        .await?;
    let res = app
        .client(&app.tpp_a)?
        .post(&url)
        .bearer_auth(&token)
        .body(AAC_BODY)
        .send()
        .await?;
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await?;
    assert!(body.get("Data").is_none(), "{body}");
    assert!(!body.to_string().contains("aac-"), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_reports_an_intact_chain_and_the_first_tampered_event() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let http = app.client(&app.tpp_a)?;
    for _ in 0..3 {
        http.post(format!("{}{CONSENTS}", app.mtls))
            .bearer_auth(&token)
            .body(AAC_BODY)
            .send()
            .await?;
    }
    let n = app.audit().await?.len();
    let out = app.cli(&["audit", "verify"])?;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)?.trim(),
        format!("intact up to seq {n}")
    );

    let out = app.cli(&["audit", "export", "--format", "csv"])?;
    let csv = String::from_utf8(out.stdout)?;
    assert!(csv.starts_with("seq,ts,interaction_id,"));
    assert_eq!(csv.lines().count(), n + 1);
    let out = app.cli(&["audit", "export", "--from", "2000-01-01T00:00:00Z"])?;
    assert_eq!(String::from_utf8(out.stdout)?.lines().count(), n);
    let out = app.cli(&["audit", "export", "--to", "2000-01-01T00:00:00Z"])?;
    assert_eq!(String::from_utf8(out.stdout)?.lines().count(), 0);
    let out = app.cli(&["audit", "export", "--from", "last tuesday"])?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("--from"));

    app.sql("UPDATE audit_events SET status = 200, outcome = 'allowed' WHERE seq = 2")
        .await?;
    let out = app.cli(&["audit", "verify"])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout)?.starts_with("broken at seq 2:"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_a_path_names_and_the_token_presented_for_introspection_are_audited()
-> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let a = app.client(&app.tpp_a)?;
    let url = format!("{}{CONSENTS}", app.mtls);
    let created: Value = a
        .post(&url)
        .bearer_auth(&token)
        .header("x-fapi-interaction-id", "s-create")
        .body(AAC_BODY)
        .send()
        .await?
        .json()
        .await?;
    let id = created["Data"]["ConsentId"]
        .as_str()
        .ok_or("no consent id")?;
    for (interaction, request) in [
        ("s-read", a.get(format!("{url}/{id}"))),
        ("s-withdraw", a.delete(format!("{url}/{id}"))),
    ] {
        let res = request
            .bearer_auth(&token)
            .header("x-fapi-interaction-id", interaction)
            .send()
            .await?;
        assert!(res.status().is_success(), "{interaction}: {}", res.status());
    }
    let introspected = a
        .post(format!("{}/introspect", app.mtls))
        .header("x-fapi-interaction-id", "s-introspect")
        .form(&[("client_id", "tpp-a"), ("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(introspected.status(), 200);

    for interaction in ["s-create", "s-read", "s-withdraw"] {
        let events = app.audit_of(interaction).await?;
        assert_eq!(events.len(), 1, "{interaction}");
        assert_eq!(events[0].consent_id.as_deref(), Some(id), "{interaction}");
        assert_eq!(
            events[0].client_id.as_deref(),
            Some("tpp-a"),
            "{interaction}"
        );
    }
    let introspection = &app.audit_of("s-introspect").await?[0];
    assert_eq!(introspection.client_id.as_deref(), Some("tpp-a"));
    assert_eq!(
        introspection.token_jti.as_deref(),
        claims_of(&token)?["jti"].as_str()
    );
    Ok(())
}
