//! Open Banking consent endpoints behind the guard chain.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_then_consent_create_then_consent_get() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let http = app.client(&app.tpp_a)?;
    let res = http
        .post(format!("{}{CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .header(
            "x-fapi-interaction-id",
            "93bac548-d2de-4546-b106-880a5018460d",
        )
        .header("content-type", "application/json")
        .body(AAC_BODY)
        .send()
        .await?;
    assert_eq!(res.status(), 201);
    assert_eq!(
        res.headers()
            .get("x-fapi-interaction-id")
            .and_then(|v| v.to_str().ok()),
        Some("93bac548-d2de-4546-b106-880a5018460d")
    );
    assert!(res.headers().contains_key("date"));
    let created: Value = res.json().await?;
    let id = created["Data"]["ConsentId"]
        .as_str()
        .ok_or("no ConsentId")?;
    assert_eq!(created["Data"]["Status"], "AwaitingAuthorisation");
    assert_eq!(created["Data"]["Permissions"][1], "ReadBalances");
    assert_eq!(
        created["Links"]["Self"],
        format!("{}{CONSENTS}/{id}", app.settings.server.mtls_url)
    );
    assert_eq!(created["Meta"]["TotalPages"], 1);

    let res = http
        .get(format!("{}{CONSENTS}/{id}", app.mtls))
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let read: Value = res.json().await?;
    assert_eq!(read["Data"], created["Data"]);
    assert!(res_has_generated_interaction_id(&http, &app, &token).await?);

    let other = app.token(&app.tpp_b, "tpp-b", "accounts").await?;
    let res = app
        .client(&app.tpp_b)?
        .get(format!("{}{CONSENTS}/{id}", app.mtls))
        .bearer_auth(&other)
        .send()
        .await?;
    assert_eq!(res.status(), 404, "another client's consent is not visible");

    let res = http
        .delete(format!("{}{CONSENTS}/{id}", app.mtls))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(res.status(), 204);
    let read: Value = http
        .get(format!("{}{CONSENTS}/{id}", app.mtls))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(read["Data"]["Status"], "Revoked");
    Ok(())
}

async fn res_has_generated_interaction_id(
    http: &reqwest::Client,
    app: &TestApp,
    token: &str,
) -> Res<bool> {
    let res = http
        .get(format!("{}{CONSENTS}/aac-missing", app.mtls))
        .bearer_auth(token)
        .send()
        .await?;
    let id = res
        .headers()
        .get("x-fapi-interaction-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(res.status() == 404 && uuid::Uuid::parse_str(&id).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_and_funds_confirmation_consents_are_created_and_read() -> TestResult {
    let app = spawn_app().await?;
    let token = app
        .token(&app.tpp_a, "tpp-a", "payments fundsconfirmations")
        .await?;
    let http = app.client(&app.tpp_a)?;
    let body = payment_body("165.88");
    let post = |key: &'static str, body: String| {
        http.post(format!("{}{PAYMENT_CONSENTS}", app.mtls))
            .bearer_auth(&token)
            .header("x-idempotency-key", key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = post("key-1", body.clone()).await?;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await?;
    assert_eq!(
        first["Data"]["Initiation"]["InstructedAmount"]["Amount"],
        "165.88"
    );
    assert_eq!(first["Risk"]["PaymentContextCode"], "EcommerceGoods");
    let again: Value = post("key-1", body.clone()).await?.json().await?;
    assert_eq!(
        again["Data"]["ConsentId"], first["Data"]["ConsentId"],
        "same key and body: same consent"
    );
    let reused = post("key-1", payment_body("999.00")).await?;
    assert_eq!(reused.status(), 400);
    let err: Value = reused.json().await?;
    assert_eq!(err["Errors"][0]["Path"], "x-idempotency-key");

    let missing_key = http
        .post(format!("{}{PAYMENT_CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await?;
    assert_eq!(missing_key.status(), 400);
    let err: Value = missing_key.json().await?;
    assert_eq!(err["Errors"][0]["ErrorCode"], "UK.OBIE.Header.Missing");

    let id = first["Data"]["ConsentId"].as_str().ok_or("no id")?;
    let read = http
        .get(format!("{}{PAYMENT_CONSENTS}/{id}", app.mtls))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(read.status(), 200);

    let funds = http
        .post(format!("{}{FUNDS_CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .body(r#"{"Data":{"DebtorAccount":{"SchemeName":"UK.OBIE.SortCodeAccountNumber","Identification":"11280001234567","Name":"Alice"}}}"#)
        .send()
        .await?;
    assert_eq!(funds.status(), 201);
    let funds: Value = funds.json().await?;
    assert!(funds.get("Risk").is_none());
    let id = funds["Data"]["ConsentId"].as_str().ok_or("no id")?;
    let read = http
        .get(format!("{}{FUNDS_CONSENTS}/{id}", app.mtls))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(read.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aisp_only_client_is_forbidden_on_a_payment_route() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.aisp_only, "tpp-aisp", "accounts").await?;
    let res = app
        .client(&app.aisp_only)?
        .post(format!("{}{PAYMENT_CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .header("x-idempotency-key", "k")
        .body(payment_body("1.00"))
        .send()
        .await?;
    assert_eq!(res.status(), 403);
    let body: Value = res.json().await?;
    assert!(
        body["Message"].as_str().is_some_and(|m| m.contains("PISP")),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_routes_scope_is_forbidden() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let res = app
        .client(&app.tpp_a)?
        .post(format!("{}{FUNDS_CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await?;
    assert_eq!(res.status(), 403);
    let www = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        www.contains(r#"error="insufficient_scope""#) && www.contains("fundsconfirmations"),
        "{www}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_invalid_bodies_get_open_banking_400s() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let http = app.client(&app.tpp_a)?;
    let cases = [
        (
            r#"{"Data": {"Permissions": ["ReadBalances"]"#,
            "UK.OBIE.Resource.InvalidFormat",
        ),
        (
            r#"{"Data":{"Permissions":["ReadBalances"]},"Risk":{},"Extra":1}"#,
            "UK.OBIE.Resource.InvalidFormat",
        ),
        (
            r#"{"Data":{"Permissions":[]},"Risk":{}}"#,
            "UK.OBIE.Field.Missing",
        ),
        (
            r#"{"Data":{"Permissions":["ReadBalances"],"ExpirationDateTime":"tomorrow"},"Risk":{}}"#,
            "UK.OBIE.Field.InvalidDate",
        ),
    ];
    for (body, code) in cases {
        let res = http
            .post(format!("{}{CONSENTS}", app.mtls))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await?;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await?;
        assert_eq!(err["Errors"][0]["ErrorCode"], code, "{body}: {err}");
        assert!(err["Id"].is_string() && err["Code"].is_string() && err["Message"].is_string());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_401_and_a_token_in_the_query_string_is_400() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let http = app.client(&app.tpp_a)?;
    let res = http
        .post(format!("{}{CONSENTS}", app.mtls))
        .body(AAC_BODY)
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some(r#"Bearer realm="obgate""#)
    );
    let res = http
        .post(format!("{}{CONSENTS}?access_token={token}", app.mtls))
        .body(AAC_BODY)
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let www = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(www.contains(r#"error="invalid_request""#), "{www}");
    let res = http
        .get(format!("{}/open-banking/v3.1/aisp/nothing-here", app.mtls))
        .send()
        .await?;
    assert_eq!(res.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_is_answered_by_the_guard_first_and_refused_unread_after_it() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let http = app.client(&app.tpp_a)?;
    let big = format!(
        r#"{{"Data":{{"Permissions":["ReadBalances"]}},"Risk":{{"x":"{}"}}}}"#,
        "a".repeat(300 * 1024)
    );
    let res = http
        .post(format!("{}{CONSENTS}", app.mtls))
        .bearer_auth("not-a-token")
        .body(big.clone())
        .send()
        .await?;
    assert_eq!(
        res.status(),
        401,
        "the token is the first failure, not the body"
    );
    let res = http
        .post(format!("{}{CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .body(big)
        .send()
        .await?;
    assert_eq!(res.status(), 413);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_headers_and_ids_of_the_wrong_kind_are_handled() -> TestResult {
    let app = spawn_app().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts payments").await?;
    let http = app.client(&app.tpp_a)?;

    let res = http
        .post(format!("{}{PAYMENT_CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .header("x-idempotency-key", "k".repeat(41))
        .body(payment_body("1.00"))
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await?;
    assert_eq!(err["Errors"][0]["Path"], "x-idempotency-key");

    let created: Value = http
        .post(format!("{}{CONSENTS}", app.mtls))
        .bearer_auth(&token)
        .header("x-fapi-interaction-id", "not an id; DROP TABLE")
        .body(AAC_BODY)
        .send()
        .await?
        .json()
        .await?;
    let id = created["Data"]["ConsentId"].as_str().ok_or("no id")?;
    let res = http
        .get(format!("{}{PAYMENT_CONSENTS}/{id}", app.mtls))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(
        res.status(),
        404,
        "an account-access consent is no payment consent"
    );

    let events = app.audit().await?;
    assert!(events.iter().all(|e| !e.interaction_id.contains("DROP")));
    assert!(
        events
            .iter()
            .filter(|e| e.consent_id.as_deref() == Some(id))
            .all(|e| uuid::Uuid::parse_str(&e.interaction_id).is_ok()),
        "an unusable interaction id is replaced by a UUID"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_a_nul_byte_are_not_found_on_either_backend() -> TestResult {
    let app = spawn_app().await?;
    let http = app.client(&app.tpp_a)?;
    let accounts = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let payments = app.token(&app.tpp_a, "tpp-a", "payments").await?;
    for (token, path) in [
        (&accounts, format!("{CONSENTS}/aac-x%00y")),
        (&payments, format!("{PAYMENT_CONSENTS}/%00")),
        (
            &payments,
            "/open-banking/v3.1/pisp/domestic-payments/dp-%00".to_string(),
        ),
    ] {
        let res = http
            .get(format!("{}{path}", app.mtls))
            .bearer_auth(token)
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // An intent id with a NUL in a pushed request: a client error, not a server one.
    let claims = serde_json::json!({"id_token": {"openbanking_intent_id": {"value": "aac-\u{0}", "essential": true}}});
    let res = http
        .post(format!("{}/par", app.mtls))
        .form(&[
            ("client_id", "tpp-a"),
            ("response_type", "code"),
            ("redirect_uri", &redirect_uri("tpp-a")),
            ("scope", "openid accounts"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
            ("claims", &claims.to_string()),
            ("nonce", "n-0S6_WzA2Mj"),
        ])
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_consent_requests_with_one_idempotency_key_get_one_consent() -> TestResult {
    let app = spawn_app().await?;
    let http = app.client(&app.tpp_a)?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let key = format!("idem-{}", now());
    let send = || {
        http.post(format!("{}{CONSENTS}", app.mtls))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("x-idempotency-key", &key)
            .body(AAC_BODY)
            .send()
    };
    let answers = futures_util::future::join_all((0..8).map(|_| send())).await;
    let mut ids = std::collections::BTreeSet::new();
    for res in answers {
        let res = res?;
        let status = res.status();
        let body: Value = res.json().await?;
        assert_eq!(status, 201, "{body}");
        ids.insert(
            body["Data"]["ConsentId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(ids.len(), 1, "one consent for one key: {ids:?}");
    Ok(())
}
