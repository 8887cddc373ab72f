//! Upstream mode: the policy sends routes to a core-banking system (here a recording HTTP
//! server on loopback that answers like a careless core would: more than the consent grants).
//! The gateway must hold every request and every answer to the consent, exactly as the sandbox
//! path does.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::flows::*;
use crate::helpers::*;

type Headers = Vec<(String, String)>;

/// The recording core system.
struct Core {
    seen: Arc<Mutex<Vec<Headers>>>,
    port: u16,
    handle: actix_web::dev::ServerHandle,
}

impl Core {
    fn calls(&self) -> Res<Vec<Headers>> {
        Ok(self.seen.lock().map_err(|_| "poisoned")?.clone())
    }

    /// How many requests reached the core on a path ending in `tail`.
    fn calls_to(&self, tail: &str) -> Res<usize> {
        Ok(self
            .calls()?
            .iter()
            .filter(|c| c.iter().any(|(k, v)| k == "path" && v.ends_with(tail)))
            .count())
    }
}

fn days_ago(days: i64) -> String {
    obgate::clock::ob_datetime(obgate::clock::now() - time::Duration::days(days))
}

/// What a core system that trusts the gateway blindly answers: every account it is asked
/// about plus one of somebody else's, with Detail fields, and transactions of every kind.
fn core_answer(path: &str, shared: &[&str]) -> (u16, Value) {
    let account = |id: &str| {
        json!({"AccountId": id, "Currency": "GBP", "Nickname": "from core",
            "Account": [{"SchemeName": "UK.OBIE.SortCodeAccountNumber", "Identification": "11223312345678"}],
            "Servicer": {"SchemeName": "UK.OBIE.BICFI", "Identification": "CORE"}})
    };
    let segments: Vec<&str> = path.split('?').next().unwrap_or("").split('/').collect();
    let path_account = segments
        .iter()
        .position(|s| *s == "accounts")
        .and_then(|i| segments.get(i + 1))
        .copied();
    let txn = |id: &str, account: &str, indicator: &str, at: Option<String>| {
        let mut t = json!({"AccountId": account, "TransactionId": id,
            "CreditDebitIndicator": indicator, "Status": "Booked",
            "Amount": {"Amount": "1.00", "Currency": "GBP"},
            "TransactionInformation": "secret detail",
            "DebtorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber", "Identification": "99"}});
        if let Some(at) = at {
            t["BookingDateTime"] = json!(at);
        }
        t
    };
    match path.split('?').next().unwrap_or("") {
        p if p.ends_with("/domestic-payments") => (
            201,
            json!({"Data": {"DomesticPaymentId": "core-pay-1", "Status": "AcceptedSettlementInProcess"}}),
        ),
        p if p.ends_with("/funds-confirmations") => {
            (201, json!({"Data": {"FundsAvailable": true}}))
        }
        p if p.ends_with("/balances") => {
            let id = path_account.unwrap_or_default();
            let balances: Vec<Value> = [id, "foreign-1"]
                .iter()
                .map(|a| json!({"AccountId": a, "Type": "InterimAvailable", "CreditDebitIndicator": "Credit", "Amount": {"Amount": "10.00", "Currency": "GBP"}}))
                .collect();
            (200, json!({"Data": {"Balance": balances}}))
        }
        p if p.ends_with("/transactions") => {
            let id = path_account.unwrap_or_default();
            (
                200,
                json!({"Data": {"Transaction": [
                    txn("in-window-credit", id, "Credit", Some(days_ago(1))),
                    txn("in-window-debit", id, "Debit", Some(days_ago(1))),
                    txn("too-old-credit", id, "Credit", Some("2000-01-01T00:00:00+00:00".into())),
                    txn("undated-credit", id, "Credit", None),
                    txn("foreign-credit", "foreign-1", "Credit", Some(days_ago(1))),
                ]}, "Links": {"Self": "core"}, "Meta": {"TotalPages": 1}}),
            )
        }
        _ => {
            let ids: Vec<&str> = match path_account {
                Some(id) => vec![id, "foreign-1"],
                None => shared.iter().copied().chain(["foreign-1"]).collect(),
            };
            (
                200,
                json!({"Data": {"Account": ids.iter().map(|a| account(a)).collect::<Vec<_>>(),
                    "Beneficiary": [{"Name": "not asked for"}]}}),
            )
        }
    }
}

async fn core() -> Res<Core> {
    let seen: Arc<Mutex<Vec<Headers>>> = Arc::default();
    let recorder = Arc::clone(&seen);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let server = actix_web::HttpServer::new(move || {
        let recorder = Arc::clone(&recorder);
        actix_web::App::new().default_service(actix_web::web::to(
            move |req: actix_web::HttpRequest| {
                let recorder = Arc::clone(&recorder);
                async move {
                    let headers: Headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                        .chain([("path".to_string(), req.uri().to_string())])
                        .collect();
                    let shared = headers
                        .iter()
                        .find(|(k, _)| k == "x-obgate-account-ids")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default();
                    let shared: Vec<&str> = shared.split(',').filter(|s| !s.is_empty()).collect();
                    let (status, body) = core_answer(&req.uri().to_string(), &shared);
                    if let Ok(mut s) = recorder.lock() {
                        s.push(headers);
                    }
                    actix_web::HttpResponse::build(
                        actix_web::http::StatusCode::from_u16(status)
                            .unwrap_or(actix_web::http::StatusCode::OK),
                    )
                    .json(body)
                }
            },
        ))
    })
    .workers(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Core { seen, port, handle })
}

/// The shipped policy with `routes` sent to the core at `port`.
fn upstream_policy(
    port: u16,
    routes: &'static [&'static str],
) -> impl FnOnce(&mut obgate::config::Settings) {
    with_policy(move |t| {
        let mut t = t;
        for route in routes {
            let marker = format!("route = \"{route}\"\n");
            if let Some(start) = t.find(&marker) {
                t.insert_str(start + marker.len(), "upstream = \"core\"\n");
            }
        }
        format!("{t}\n[upstreams.core]\nurl = \"http://127.0.0.1:{port}/core\"\n")
    })
}

const ACCOUNT_ROUTES: &[&str] = &[
    "/open-banking/v3.1/aisp/accounts",
    "/open-banking/v3.1/aisp/accounts/{AccountId}",
    "/open-banking/v3.1/aisp/accounts/{AccountId}/balances",
    "/open-banking/v3.1/aisp/accounts/{AccountId}/transactions",
    "/open-banking/v3.1/pisp/domestic-payments",
    "/open-banking/v3.1/cbpii/funds-confirmations",
];

#[tokio::test]
async fn upstream_routes_carry_who_is_asking_but_never_the_token_or_certificate() -> TestResult {
    let core = core().await?;
    let app = spawn_app_with(upstream_policy(core.port, ACCOUNT_ROUTES)).await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let (tokens, _) = ais_tokens(&a).await?;
    let res = a
        .http
        .get(format!("{}{ACCOUNTS}?x=1", app.mtls))
        .bearer_auth(&tokens.access_token)
        .header("x-fapi-interaction-id", "upstream-test-1")
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await?;
    assert_eq!(
        body["Data"]["Account"][0]["Nickname"],
        json!("from core"),
        "served by the upstream"
    );
    // A consent refusal never reaches the upstream.
    let cc = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    assert_eq!(a.get(&cc, ACCOUNTS).await?.0, 403);

    let calls = core.calls()?;
    assert_eq!(calls.len(), 1, "{calls:?}");
    let h = |name: &str| {
        calls[0]
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        h("path").as_deref(),
        Some("/core/open-banking/v3.1/aisp/accounts?x=1")
    );
    assert_eq!(h("x-obgate-client-id").as_deref(), Some("tpp-a"));
    assert_eq!(h("x-obgate-consent-id"), Some(tokens.consent_id.clone()));
    assert_eq!(h("x-obgate-psu-id").as_deref(), Some("alice"));
    assert_eq!(
        h("x-fapi-interaction-id").as_deref(),
        Some("upstream-test-1")
    );
    assert!(
        h("authorization").is_none(),
        "the bearer token never leaves"
    );
    let leaked = calls[0].iter().any(|(k, v)| {
        k.contains("cert") || v.contains(&tokens.access_token) || v.contains("BEGIN CERTIFICATE")
    });
    assert!(!leaked, "{calls:?}");
    let shared = h("x-obgate-account-ids").ok_or("no account ids")?;

    // An account outside the consent is refused before the upstream is asked.
    let bobs = app.store.accounts_of("bob").await?;
    let (status, _) = a
        .get(
            &tokens.access_token,
            &format!("{ACCOUNTS}/{}/balances", bobs[0].account_id),
        )
        .await?;
    assert_eq!(status, 403);
    let (status, _) = a
        .get(
            &tokens.access_token,
            &format!("{ACCOUNTS}/{shared}/balances"),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(
        core.calls()?.len(),
        2,
        "only the consented read went upstream"
    );

    // A payment consent pays once even when the upstream makes the payment.
    let pay = authorised_payment(&app, &a, "5.00").await?;
    let key = uuid();
    let send = |body: &Value, key: &str| {
        let (a, token, body, key) = (
            &a,
            pay.tokens.access_token.clone(),
            body.clone(),
            key.to_string(),
        );
        async move { a.post_json(&token, PAYMENTS, Some(&key), &body).await }
    };
    assert_eq!(send(&pay.payment, &key).await?.0, 201);
    assert_eq!(
        send(&pay.payment, &key).await?.0,
        201,
        "an idempotent repeat passes"
    );
    let mut other = pay.payment.clone();
    other["Risk"] = json!({"x": 1});
    assert_eq!(send(&other, &key).await?.0, 400);
    assert_eq!(
        send(&pay.payment, &uuid()).await?.0,
        403,
        "a second payment"
    );
    assert_eq!(
        core.calls_to("/domestic-payments")?,
        2,
        "first try and its repeat"
    );
    let payments: Vec<_> = core
        .calls()?
        .into_iter()
        .filter(|c| {
            c.iter()
                .any(|(k, v)| k == "path" && v.ends_with("/domestic-payments"))
        })
        .collect();
    assert!(
        payments
            .iter()
            .all(|c| c.iter().any(|(k, v)| k == "x-idempotency-key" && *v == key))
    );
    core.handle.stop(false).await;
    Ok(())
}

#[tokio::test]
async fn upstream_payments_must_repeat_their_consent_exactly_like_sandbox_ones() -> TestResult {
    let core = core().await?;
    let app = spawn_app_with(upstream_policy(core.port, ACCOUNT_ROUTES)).await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let pay = authorised_payment(&app, &a, "5.00").await?;
    let token = &pay.tokens.access_token;

    let mut more = pay.payment.clone();
    more["Data"]["Initiation"]["InstructedAmount"]["Amount"] = json!("5000.00");
    let (status, err) = a.post_json(token, PAYMENTS, Some(&uuid()), &more).await?;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["Errors"][0]["Path"], json!("Data.Initiation"), "{err}");

    let mut elsewhere = pay.payment.clone();
    elsewhere["Data"]["Initiation"]["CreditorAccount"]["Identification"] = json!("40400411111111");
    assert_eq!(
        a.post_json(token, PAYMENTS, Some(&uuid()), &elsewhere)
            .await?
            .0,
        400,
        "another creditor"
    );
    let mut risk = pay.payment.clone();
    risk["Risk"] = json!({"PaymentContextCode": "PartyToParty"});
    let (status, err) = a.post_json(token, PAYMENTS, Some(&uuid()), &risk).await?;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["Errors"][0]["Path"], json!("Risk"), "{err}");
    let mut foreign = pay.payment.clone();
    foreign["Data"]["ConsentId"] = json!("pdc-someone-else");
    assert_eq!(
        a.post_json(token, PAYMENTS, Some(&uuid()), &foreign)
            .await?
            .0,
        400,
        "another consent's id"
    );
    assert_eq!(
        core.calls_to("/domestic-payments")?,
        0,
        "nothing the customer did not approve reaches the core"
    );
    // None of that used the consent up: the approved payment still goes through, once.
    assert_eq!(
        a.post_json(token, PAYMENTS, Some(&uuid()), &pay.payment)
            .await?
            .0,
        201
    );
    assert_eq!(core.calls_to("/domestic-payments")?, 1);
    core.handle.stop(false).await;
    Ok(())
}

#[tokio::test]
async fn upstream_funds_confirmation_must_name_the_tokens_consent() -> TestResult {
    let core = core().await?;
    let app = spawn_app_with(upstream_policy(core.port, ACCOUNT_ROUTES)).await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let (_, consent, tokens) = funds_consent(&tpp).await?;
    let ask = |consent: &str, amount: &str| json!({"Data": {"ConsentId": consent, "Reference": "Purchase01", "InstructedAmount": {"Amount": amount, "Currency": "GBP"}}});
    let (status, err) = tpp
        .post_json(
            &tokens.access_token,
            FUNDS,
            None,
            &ask("fcc-another", "1.00"),
        )
        .await?;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["Errors"][0]["Path"], json!("Data.ConsentId"), "{err}");
    assert_eq!(
        tpp.post_json(&tokens.access_token, FUNDS, None, &ask(&consent, "-3"))
            .await?
            .0,
        400,
        "not a positive amount"
    );
    assert_eq!(core.calls_to("/funds-confirmations")?, 0);
    let (status, yes) = tpp
        .post_json(&tokens.access_token, FUNDS, None, &ask(&consent, "1.00"))
        .await?;
    assert_eq!(status, 201, "{yes}");
    assert_eq!(core.calls_to("/funds-confirmations")?, 1);
    core.handle.stop(false).await;
    Ok(())
}

#[tokio::test]
async fn upstream_account_data_reaches_the_tpp_only_as_far_as_the_consent_grants() -> TestResult {
    let core = core().await?;
    let app = spawn_app_with(upstream_policy(core.port, ACCOUNT_ROUTES)).await?;
    let a = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let body = format!(
        r#"{{"Data":{{"Permissions":["ReadAccountsBasic","ReadBalances","ReadTransactionsBasic","ReadTransactionsCredits"],"TransactionFromDateTime":"{}"}},"Risk":{{}}}}"#,
        days_ago(60)
    );
    let consent = a.consent(CONSENTS, "accounts", &body).await?;
    let flow = a.par("openid accounts", &consent).await?;
    let cb = customer_decides(&app, &flow.authorize_url, "alice", first, "approve").await?;
    let token = a.finish(flow, &cb).await?.access_token;

    let (status, list) = a.get(&token, ACCOUNTS).await?;
    assert_eq!(status, 200, "{list}");
    let accounts = list["Data"]["Account"].as_array().ok_or("no accounts")?;
    assert_eq!(accounts.len(), 1, "only the account alice shared: {list}");
    let id = accounts[0]["AccountId"]
        .as_str()
        .ok_or("no id")?
        .to_string();
    assert_ne!(id, "foreign-1");
    assert!(accounts[0].get("Account").is_none(), "Basic: {list}");
    assert!(accounts[0].get("Servicer").is_none(), "Basic: {list}");
    assert_eq!(accounts[0]["Nickname"], json!("from core"));
    assert!(list["Data"].get("Beneficiary").is_none(), "{list}");

    let (status, one) = a.get(&token, &format!("{ACCOUNTS}/{id}")).await?;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        one["Data"]["Account"].as_array().map(Vec::len),
        Some(1),
        "{one}"
    );

    let (status, balances) = a.get(&token, &format!("{ACCOUNTS}/{id}/balances")).await?;
    assert_eq!(status, 200, "{balances}");
    let balances = balances["Data"]["Balance"]
        .as_array()
        .ok_or("no balances")?;
    assert!(
        balances.iter().all(|b| b["AccountId"] == json!(id)) && balances.len() == 1,
        "{balances:?}"
    );

    let (status, page) = a
        .get(&token, &format!("{ACCOUNTS}/{id}/transactions"))
        .await?;
    assert_eq!(status, 200, "{page}");
    let txns = page["Data"]["Transaction"].as_array().ok_or("no list")?;
    let ids: Vec<&str> = txns
        .iter()
        .filter_map(|t| t["TransactionId"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["in-window-credit"],
        "no debits, nothing outside the window or undated, nobody else's"
    );
    assert!(
        txns[0].get("TransactionInformation").is_none(),
        "Basic: {page}"
    );
    assert!(txns[0].get("DebtorAccount").is_none(), "Basic: {page}");
    assert_eq!(txns[0]["Amount"]["Amount"], json!("1.00"));
    core.handle.stop(false).await;
    Ok(())
}
