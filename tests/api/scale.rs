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

/// A TCP relay in front of Redis or PostgreSQL that can be cut, silenced and restored, so a test
/// can take a service away from a running gateway without touching the machine's. Cut, it closes
/// its port (new connections are refused, as with a stopped server) and ends every connection.
/// Silenced, it is a host gone quiet: connections stay open and new ones are accepted, but no
/// byte goes either way, until it is restored and ends them.
struct Relay {
    addr: std::net::SocketAddr,
    mode: watch::Sender<Mode>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Cut,
    Silent,
}

impl Relay {
    async fn start(target: String) -> Res<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, mut watch_mode) = watch::channel(Mode::Up);
        let target = Arc::new(target);
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(l) = &listener else {
                    // Cut: the port is closed until the relay is restored.
                    if watch_mode.wait_for(|m| *m != Mode::Cut).await.is_err() {
                        return;
                    }
                    match TcpListener::bind(addr).await {
                        Ok(l) => listener = Some(l),
                        Err(_) => return,
                    }
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = l.accept() => accepted,
                    changed = watch_mode.wait_for(|m| *m == Mode::Cut) => {
                        if changed.is_err() {
                            return;
                        }
                        listener = None;
                        continue;
                    }
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let mut mode = watch_mode.clone();
                let target = Arc::clone(&target);
                tokio::spawn(async move {
                    if *mode.borrow() == Mode::Up {
                        let Ok(mut outbound) = TcpStream::connect(target.as_str()).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = mode.wait_for(|m| *m != Mode::Up) => {}
                        }
                        // Silenced: hold both ends, quiet, until restored or cut.
                        let _ = mode.wait_for(|m| *m != Mode::Silent).await;
                    } else {
                        let _ = mode.wait_for(|m| *m != Mode::Silent).await;
                    }
                });
            }
        });
        Ok(Self { addr, mode })
    }

    fn set(&self, up: bool) {
        let _ = self.mode.send(if up { Mode::Up } else { Mode::Cut });
    }

    fn silence(&self) {
        let _ = self.mode.send(Mode::Silent);
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
    let introspection = tpp
        .http
        .post(format!("{}/introspect", app.mtls))
        .form(&[("client_id", "tpp-a"), ("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(
        introspection.status(),
        503,
        "an outage is not an answer about the token"
    );
    let body: serde_json::Value = introspection.json().await?;
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // What failed is named; how (addresses, driver messages) stays in the log.
    let consent_id = consent.1["Data"]["ConsentId"].as_str().ok_or("no id")?;
    let (status, body) = push_request(&tpp, consent_id).await?;
    assert_eq!(status, 503, "{body}");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("shared state"), "{body}");
    for internal in [
        relay.addr.port().to_string(),
        "os error".into(),
        "refused".into(),
    ] {
        assert!(
            !description.contains(&internal),
            "{internal} leaked: {body}"
        );
    }
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

const NEEDS_POSTGRES: &str =
    "set TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres to run the PostgreSQL tests";

#[tokio::test]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -- --include-ignored"]
async fn serve_refuses_a_schema_it_does_not_know_and_says_what_to_run() -> TestResult {
    let pg = postgres_url().ok_or(NEEDS_POSTGRES)?;
    let app = spawn_app().await?;
    let (fresh, name) = create_database(&pg).await?;
    let mut settings = app.settings.clone();
    settings.database.url = fresh.clone();
    let behind = obgate::startup::Application::build(settings.clone())
        .await
        .err()
        .ok_or("started on an empty schema")?;
    assert!(behind.to_string().contains("obgate migrate"), "{behind}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .arg("--config")
        .arg(&app.config_file)
        .arg("--data-dir")
        .arg(app.path("data"))
        .arg("migrate")
        .env("OBGATE_DATABASE_URL", &fresh)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = obgate::startup::Application::build(settings.clone()).await?;
    let handle = started.handle();
    tokio::spawn(started.run_until_stopped());
    handle.stop(false).await;

    let pool = sqlx::PgPool::connect(&fresh).await?;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29990101000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await?;
    pool.close().await;
    let ahead = obgate::startup::Application::build(settings)
        .await
        .err()
        .ok_or("started on a newer schema")?;
    assert!(ahead.to_string().contains("newer obgate"), "{ahead}");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&pg).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

// Two workers: the relay keeps running while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -- --include-ignored"]
async fn losing_the_database_answers_503_and_every_response_keeps_its_audit_event() -> TestResult {
    database_outage(false).await
}

// A host that stops answering (a network partition, a frozen VM): a pooled connection fails its
// check within the pool's acquire timeout (2 s), a call already under way at its deadline (15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test -- --include-ignored"]
async fn a_database_gone_silent_answers_503_and_every_response_keeps_its_audit_event() -> TestResult
{
    database_outage(true).await
}

/// The database taken away mid-run (cut like a stopped server, or `silent` like a host that
/// stopped answering) and given back: 503 without data meanwhile, service back by itself, and
/// every response with its audit event.
async fn database_outage(silent: bool) -> TestResult {
    let pg = postgres_url().ok_or(NEEDS_POSTGRES)?;
    let target = pg
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .rsplit_once('@')
        .map_or(pg.as_str(), |(_, host)| host)
        .split(['/', '?'])
        .next()
        .unwrap_or_default()
        .to_string();
    let relay = Relay::start(target.clone()).await?;
    let via = relay.addr.to_string();
    let app =
        spawn_app_with(move |s| s.database.url = s.database.url.replacen(&target, &via, 1)).await?;
    assert!(app.settings.database.url.contains(&relay.addr.to_string()));
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let mut sent: Vec<(String, u16)> = Vec::new();
    let call = |label: &'static str| {
        let (http, url, token) = (
            tpp.http.clone(),
            format!("{}{CONSENTS}", app.mtls),
            token.clone(),
        );
        async move {
            let id = format!("db-outage-{label}-{}", uuid());
            let res = http
                .post(url)
                .bearer_auth(token)
                .header("x-fapi-interaction-id", &id)
                .header("content-type", "application/json")
                .body(AAC_BODY)
                .send()
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((id, res.status().as_u16()))
        }
    };
    sent.push(call("before").await?);
    assert_eq!(sent[0].1, 201);

    if silent {
        relay.silence();
    } else {
        relay.set(false);
    }
    let t0 = Instant::now();
    let during = call("during").await?;
    let detected = t0.elapsed();
    assert_eq!(during.1, 503, "no data while the database is gone");
    sent.push(during);
    // The first call waits out the pool (refused connections are retried for up to 2 s) or, the
    // host silent, its own deadline (15 s); once the database is known to be away, calls are
    // answered without waiting for it.
    assert!(
        detected < Duration::from_secs(16),
        "the outage took {detected:?} to notice"
    );
    let t0 = Instant::now();
    let again = call("during-again").await?;
    let fail_fast = t0.elapsed();
    assert_eq!(again.1, 503);
    sent.push(again);
    assert!(
        fail_fast < Duration::from_secs(1),
        "a known outage still waits on the pool: {fail_fast:?}"
    );
    let ready = reqwest::get(format!("{}/readyz", app.ops)).await?.status();
    assert_eq!(ready, 503);
    // The refusals' events wait on disk, not only in memory.
    let spool = app.settings.database.audit_spool.clone();
    let spooled = || std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert!(
        spooled() > 0,
        "nothing in the audit spool during the outage"
    );

    relay.set(true);
    let t1 = Instant::now();
    loop {
        let (id, status) = call("after").await?;
        sent.push((id, status));
        if status == 201 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "not back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = t1.elapsed();
    // Every response has its event once the database is back: the 2xx ones before they were
    // sent, the refusals during the outage when the held-back events were retried.
    let t2 = Instant::now();
    loop {
        let events = app.audit().await?;
        let missing: Vec<_> = sent
            .iter()
            .filter(|(id, _)| !events.iter().any(|e| &e.interaction_id == id))
            .collect();
        if missing.is_empty() {
            for (id, status) in &sent {
                let e = events
                    .iter()
                    .find(|e| &e.interaction_id == id)
                    .ok_or("vanished")?;
                assert_eq!(
                    e.status,
                    i64::from(*status),
                    "{id}: the log says what was sent"
                );
            }
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(5),
            "events never written: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spooled(), 0, "the spool is emptied once written");
    let out = app.cli(&["audit", "verify"])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "database {} answered 503 after {detected:?} (the next call after {fail_fast:?}); \
         service back {recovered:?} after the database",
        if silent { "gone silent" } else { "cut" }
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn a_rate_limit_is_counted_across_instances() -> TestResult {
    redis_url().ok_or(NEEDS_REDIS)?;
    let app = spawn_app_with(with_policy(|t| {
        format!("{t}\n[rate_limits]\nper_client_per_minute = 4\n")
    }))
    .await?;
    let b = app.another_instance().await?;
    crate::tokens::inside_one_minute(&app);
    let tpp = Tpp::new(&app, &app.tpp_a, "tpp-a")?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "tpp-a"),
        ("scope", "accounts"),
    ];
    let mut statuses = Vec::new();
    for base in [&app.mtls, &b.mtls, &app.mtls, &b.mtls, &app.mtls, &b.mtls] {
        let res = tpp
            .http
            .post(format!("{base}/token"))
            .form(&form)
            .send()
            .await?;
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    // And a client suspended at one instance is refused at the other at once.
    let out = app.cli(&["clients", "suspend", "tpp-b"])?;
    assert!(out.status.success());
    let res = Tpp::new(&app, &app.tpp_b, "tpp-b")?
        .http
        .post(format!("{}/token", b.mtls))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "tpp-b"),
            ("scope", "accounts"),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    Ok(())
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn a_revoked_token_stays_refused_when_redis_loses_its_data() -> TestResult {
    let redis = redis_url().ok_or(NEEDS_REDIS)?;
    let app = spawn_app().await?;
    let token = revoked_token(&app).await?;
    // Redis forgets everything of this gateway (a restart without persistence, a flush).
    let (keys, mut conn) = gateway_keys(&app, &redis).await?;
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;

    let t0 = Instant::now();
    stays_refused(&app, &token, "after Redis lost its data").await?;
    eprintln!(
        "revocations reloaded {:?} after Redis lost them",
        t0.elapsed()
    );
    Ok(())
}

/// A Redis server of this test's own, with a small `maxmemory`, killed when dropped.
struct SmallRedis {
    child: std::process::Child,
    url: String,
}

impl Drop for SmallRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SmallRedis {
    async fn start(policy: &str) -> Res<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--maxmemory", "3mb"])
            .args(["--maxmemory-policy", policy, "--loglevel", "warning"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("this test starts its own redis-server (from PATH): {e}"))?;
        let url = format!("redis://127.0.0.1:{port}");
        let redis = Self { child, url };
        let started = Instant::now();
        while redis.conn().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(redis)
    }

    async fn conn(&self) -> Res<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(conn)
    }

    /// Writes `n` junk keys of 1 KiB (with an expiry, so `volatile-*` policies may take them
    /// too), pushing Redis past its `maxmemory`; stops early once `until` says so.
    async fn fill(&self, n: usize, until: impl Fn(i64) -> bool, watched: &str) -> Res<()> {
        let mut conn = self.conn().await?;
        let junk = "x".repeat(1024);
        for i in 0..n {
            let _: () = redis::cmd("SET")
                .arg(format!("junk:{i}"))
                .arg(&junk)
                .arg("EX")
                .arg(3600)
                .query_async(&mut conn)
                .await?;
            if i % 100 == 0 {
                let exists: i64 = redis::cmd("EXISTS")
                    .arg(watched)
                    .query_async(&mut conn)
                    .await?;
                if until(exists) {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The keys this gateway holds in the Redis at `redis`, and a connection to it.
async fn gateway_keys(
    app: &TestApp,
    redis: &str,
) -> Res<(Vec<String>, redis::aio::MultiplexedConnection)> {
    let prefix = app
        .settings
        .state
        .url
        .split("key_prefix=")
        .nth(1)
        .ok_or("no key prefix")?;
    let client = redis::Client::open(redis)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    Ok((keys, conn))
}

/// A client-credentials token of tpp-a's, revoked at /revoke.
async fn revoked_token(app: &TestApp) -> Res<String> {
    let token = app.token(&app.tpp_a, "tpp-a", "accounts").await?;
    let revoked = app
        .client(&app.tpp_a)?
        .post(format!("{}/revoke", app.mtls))
        .form(&[("client_id", "tpp-a"), ("token", token.as_str())])
        .send()
        .await?;
    assert_eq!(revoked.status(), 200);
    Ok(token)
}

/// A revoked token's check through `tpp`: 401 (refused as revoked) or 503 (revocations being
/// reloaded), never anything that lets it through; polls until 401.
async fn stays_refused(app: &TestApp, token: &str, when: &str) -> TestResult {
    let tpp = Tpp::new(app, &app.tpp_a, "tpp-a")?;
    let t0 = Instant::now();
    loop {
        let (status, body) = tpp.get(token, &format!("{CONSENTS}/aac-none")).await?;
        assert!(
            status == 503 || status == 401,
            "{when}: a revoked token must never pass: {status} {body}"
        );
        if status == 401 {
            return Ok(());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{when}: revocations not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn a_revoked_token_stays_refused_when_redis_evicts_keys() -> TestResult {
    redis_url().ok_or(NEEDS_REDIS)?;
    for policy in ["volatile-lru", "allkeys-random", "allkeys-lru"] {
        let redis = SmallRedis::start(policy).await?;
        let url = format!("{}?key_prefix=t:", redis.url);
        let app = spawn_app_with(move |s| s.state.url = url).await?;
        let token = revoked_token(&app).await?;
        stays_refused(&app, &token, policy).await?;
        // Memory pressure: under `volatile-*` Redis evicts what has an expiry, under
        // `allkeys-*` anything, until what the gateway keeps there is gone (or 20-40 MiB
        // later).
        let any_key = policy.starts_with("allkeys");
        redis
            .fill(
                if any_key { 40_000 } else { 20_000 },
                |exists| any_key && exists == 0,
                "t:revocations",
            )
            .await?;
        let mut conn = redis.conn().await?;
        let evicted: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await?;
        assert!(
            !evicted.contains("evicted_keys:0\r"),
            "{policy}: nothing was evicted"
        );
        // Random eviction is sure to take the key in the end; LRU may keep it (the gateway
        // reads it every second), and then only the never-passes check below applies.
        if policy == "allkeys-random" {
            let left: i64 = redis::cmd("EXISTS")
                .arg("t:revocations")
                .query_async(&mut conn)
                .await?;
            assert_eq!(left, 0, "{policy}: the revocations were never evicted");
        }
        stays_refused(&app, &token, policy).await?;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        stays_refused(&app, &token, policy).await?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs Redis: TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -- --include-ignored"]
async fn anonymous_visitors_leave_nothing_in_shared_state_or_the_audit_log() -> TestResult {
    let redis = redis_url().ok_or(NEEDS_REDIS)?;
    let url = redis_with_prefix(&redis);
    let app = spawn_app_with(move |s| s.state.url = url).await?;
    let keys = || async {
        let (keys, _) = gateway_keys(&app, &redis).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            keys.into_iter()
                .filter(|k| !k.ends_with("revocations"))
                .collect::<Vec<_>>(),
        )
    };
    let before = app.audit().await?.len();
    let browser = app.anonymous_no_redirects()?;
    for _ in 0..50 {
        let page = browser
            .get(format!("{}/connected-apps", app.public))
            .send()
            .await?;
        assert_eq!(page.status(), 200);
    }
    assert_eq!(
        keys().await?,
        Vec::<String>::new(),
        "anonymous page views kept state"
    );
    assert_eq!(
        app.audit().await?.len(),
        before,
        "anonymous page views were audited"
    );
    Ok(())
}

/// A small tmpfs mounted for one test (needs root), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Res<Self> {
        let dir = tempfile::tempdir()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("this test mounts a tmpfs (root only): {e}"))?;
        if !status.success() {
            return Err("this test mounts a tmpfs and needs root to do so".into());
        }
        Ok(Self { dir })
    }

    /// Fills the disk to the last byte; returns the file to delete to free it.
    fn fill(&self) -> Res<std::path::PathBuf> {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 4096];
        for _ in 0..(64 * 256) {
            if f.write_all(&chunk).and_then(|()| f.sync_all()).is_err() {
                break;
            }
        }
        // The last partial block too.
        while f.write_all(&[0u8]).and_then(|()| f.flush()).is_ok() {}
        Ok(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a small tmpfs to fill (CI runs it as root)"]
async fn a_full_disk_answers_503_and_service_resumes_by_itself_when_space_returns() -> TestResult {
    let disk = SmallDisk::mount("24m")?;
    let url = format!("sqlite://{}", disk.dir.path().join("obgate.db").display());
    let app = spawn_app_with(move |s| s.database.url = url).await?;
    let tpp = app.client(&app.tpp_a)?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "tpp-a"),
        ("scope", "accounts"),
    ];
    let token = || tpp.post(format!("{}/token", app.mtls)).form(&form).send();
    let ops = reqwest::Client::new();
    let ready = || ops.get(format!("{}/readyz", app.ops)).send();
    assert_eq!(token().await?.status(), 200);
    assert_eq!(ready().await?.status(), 200);

    let filler = disk.fill()?;
    let mut refused = 0;
    for _ in 0..200 {
        let res = token().await?;
        match res.status().as_u16() {
            200 => {}
            503 => {
                refused += 1;
                let body: serde_json::Value = res.json().await?;
                assert!(
                    body["Message"].as_str().unwrap_or_default().contains("log"),
                    "{body}"
                );
                let readiness = ready().await?;
                assert_eq!(readiness.status(), 503, "refusing requests, yet ready");
                let why: serde_json::Value = readiness.json().await?;
                assert!(
                    why["audit"].as_str().unwrap_or_default().contains("full"),
                    "the cause is named: {why}"
                );
                break;
            }
            other => return Err(format!("a full disk answered {other}").into()),
        }
    }
    assert_eq!(refused, 1, "a full disk never refused a request");

    std::fs::remove_file(&filler)?;
    let t0 = Instant::now();
    loop {
        if token().await?.status() == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not serving again 10 s after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = t0.elapsed();
    assert_eq!(ready().await?.status(), 200);
    let out = app.cli(&["audit", "verify"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        app.audit().await?.iter().any(|e| e.status == 503),
        "the refusal's event was kept"
    );
    eprintln!("serving again {back:?} after space returned");
    Ok(())
}
