//! Several instances as one gateway, and shared state failing and coming back. These need a
//! shared Redis, so `cargo test` lists them as ignored, saying so; `.ci/run` runs them with
//! `TEST_REDIS_URL` set and `--include-ignored`, and they fail (never skip) without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::flows::*;
use crate::helpers::*;

const NEEDS_REDIS: &str =
    "set TEST_REDIS_URL=redis://127.0.0.1:6379 to run the multi-instance tests";

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn a_token_revoked_at_one_instance_is_refused_at_the_other_within_a_second() -> TestResult {
    redis_url().ok_or(NEEDS_REDIS)?;
    let app = spawn_app().await?;
    let b = app.another_instance().await?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let at_b = tpp.at(&b);
    let created = at_b
        .post_json(&token, CONSENTS, None, &serde_json::from_str(AAC_BODY)?)
        .await?;
    assert_eq!(
        created.0, 201,
        "a token minted by A is good at B: {}",
        created.1
    );
    let revoked = tpp
        .http
        .post(format!("{}/revoke", app.mtls))
        .form(&[("client_id", "tpp-a"), ("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(revoked.status(), 200);
    let t0 = Instant::now();
    let consent = created.1["Data"]["ConsentId"].as_str().ok_or("no id")?;
    loop {
        let (status, _) = at_b.get(&token, &format!("{CONSENTS}/{consent}")).await?;
        if status == 401 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "still accepted at B after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("revocation at A refused at B after {:?}", t0.elapsed());
    Ok(())
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn a_consent_authorised_through_one_instance_is_used_at_the_other() -> TestResult {
    redis_url().ok_or(NEEDS_REDIS)?;
    let app = spawn_app().await?;
    let b = app.another_instance().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    // PAR at A, the customer's browser at B, the code redeemed at A, the data read at B.
    let consent = tpp.consent(CONSENTS, "accounts", AIS_ALL).await?;
    let flow = tpp.par("openid accounts", &consent).await?;
    let url = flow.authorize_url.replacen(&app.public, &b.public, 1);
    let callback = customer_decides(&app, &url, "alice", first, "approve").await?;
    let tokens = tpp.finish(flow, &callback).await?;
    let (status, body) = tpp.at(&b).get(&tokens.access_token, ACCOUNTS).await?;
    assert_eq!(status, 200, "{body}");
    // Withdrawn at B: refused at A at once.
    let cc = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let del = tpp
        .http
        .delete(format!("{}{CONSENTS}/{consent}", b.mtls))
        .bearer_auth(cc)
        .send()
        .await?;
    assert_eq!(del.status(), 204);
    assert_eq!(tpp.get(&tokens.access_token, ACCOUNTS).await?.0, 403);
    // Both instances wrote to one unbroken audit chain.
    let out = app.cli(&["audit", "verify"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn one_code_redeemed_at_two_instances_at_once_yields_exactly_one_token() -> TestResult {
    redis_url().ok_or(NEEDS_REDIS)?;
    let app = spawn_app().await?;
    let b = app.another_instance().await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    for round in 0..5 {
        let consent = tpp.consent(CONSENTS, "accounts", AAC_BODY).await?;
        let code = code_for(&tpp, &consent).await?;
        let redirect = redirect_uri("tpp-a");
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", "tpp-a"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", VERIFIER),
        ];
        let (ra, rb) = tokio::join!(
            tpp.http
                .post(format!("{}/token", app.mtls))
                .form(&form)
                .send(),
            tpp.http
                .post(format!("{}/token", b.mtls))
                .form(&form)
                .send(),
        );
        let statuses = [ra?.status().as_u16(), rb?.status().as_u16()];
        let winners = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(winners, 1, "round {round}: {statuses:?}");
        assert!(statuses.contains(&400), "round {round}: {statuses:?}");
    }
    Ok(())
}

/// A TCP relay in front of Redis that can be cut and restored, so the test can take shared
/// state away from a running gateway without touching the machine's Redis.
struct Relay {
    addr: std::net::SocketAddr,
    up: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: String) -> Res<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (up, watch_up) = watch::channel(true);
        let target = Arc::new(target);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut alive = watch_up.clone();
                if !*alive.borrow() {
                    continue;
                }
                let target = Arc::clone(&target);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = alive.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { addr, up })
    }

    fn set(&self, up: bool) {
        let _ = self.up.send(up);
    }
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn losing_shared_state_answers_503_and_service_returns_by_itself() -> TestResult {
    let redis = redis_url().ok_or(NEEDS_REDIS)?;
    let target = redis
        .trim_start_matches("redis://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .to_string();
    let relay = Relay::start(target).await?;
    let url = redis_with_prefix(&format!("redis://{}", relay.addr));
    let app = spawn_app_with(move |s| s.state.url = url).await?;
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let consent = tpp
        .post_json(&token, CONSENTS, None, &serde_json::from_str(AAC_BODY)?)
        .await?;
    assert_eq!(consent.0, 201);
    let read = format!(
        "{CONSENTS}/{}",
        consent.1["Data"]["ConsentId"].as_str().ok_or("no id")?
    );
    let ops = reqwest::Client::new();
    let ready = |ops: &reqwest::Client| {
        let url = format!("{}/readyz", app.ops);
        let ops = ops.clone();
        async move { Ok::<_, reqwest::Error>(ops.get(url).send().await?.status().as_u16()) }
    };

    relay.set(false);
    let t0 = Instant::now();
    let (status, body) = tpp.get(&token, &read).await?;
    let detected = t0.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .unwrap_or_default()
            .contains("shared state"),
        "{body}"
    );
    assert_eq!(ready(&ops).await?, 503);
    let events = app.audit().await?;
    assert!(
        events
            .iter()
            .any(|e| e.status == 503 && e.reason.as_deref() == Some("state_unavailable")),
        "the refusal is audited"
    );

    relay.set(true);
    let t1 = Instant::now();
    loop {
        let (status, _) = tpp.get(&token, &read).await?;
        if status == 200 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "not back within 5 s of Redis returning"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = t1.elapsed();
    assert_eq!(ready(&ops).await?, 200);
    eprintln!("outage answered 503 after {detected:?}; service back {recovered:?} after Redis");
    Ok(())
}
