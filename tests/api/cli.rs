//! The command line, run as the real binary.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_openapi_document_is_what_obgate_generates() -> TestResult {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/obgate.json"))?;
    assert!(
        committed == obgate::ops::openapi::document(),
        "openapi/obgate.json is stale: run `cargo run -- openapi > openapi/obgate.json`"
    );
    let doc: Value = serde_json::from_str(&committed)?;
    // Every Open Banking operation takes a token, so the policy must cover each; nothing else
    // (the authorization server, discovery, the customer's pages, ops) is left to the policy.
    let protected = obgate::ops::openapi::protected_routes();
    let paths = doc["paths"].as_object().ok_or("no paths")?;
    for (route, item) in paths {
        for method in item.as_object().ok_or("no operations")?.keys() {
            let listed = protected
                .iter()
                .any(|(m, r)| r == route && m.eq_ignore_ascii_case(method));
            assert_eq!(
                listed,
                route.starts_with("/open-banking/"),
                "{method} {route}: protected routes are exactly the Open Banking operations"
            );
        }
    }
    assert_eq!(protected.len(), 14, "{protected:?}");
    for path in [
        "/token",
        "/par",
        "/authorize",
        "/authorize/login",
        "/authorize/decision",
        "/connected-apps",
        "/introspect",
        "/revoke",
        "/jwks",
        "/.well-known/oauth-authorization-server",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} is missing from the OpenAPI document"
        );
    }
    let app = spawn_app().await?;
    let served: Value = reqwest::get(format!("{}/openapi.json", app.ops))
        .await?
        .json()
        .await?;
    assert_eq!(served, doc);
    assert_eq!(
        reqwest::get(format!("{}/docs/", app.ops)).await?.status(),
        200
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_names_the_file_line_and_field_of_a_mistake() -> TestResult {
    let dir = tempfile::tempdir()?;
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policies/access.toml"))?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .args([
            "policy",
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken = shipped.replacen("scope = \"payments\"", "scope = \"accounts\"", 1);
    std::fs::write(dir.path().join("access.toml"), &broken)?;
    let line = broken
        .lines()
        .position(|l| l.contains("role = \"PISP\""))
        .ok_or("no PISP rule")?
        + 2;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .args(["policy", "check"])
        .arg(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains(&format!("access.toml:{line}:")), "{stderr}");
    assert!(
        stderr.contains(".scope: role PISP may not hold scope accounts"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_register_list_and_show_speak_json() -> TestResult {
    let app = spawn_app().await?;
    let cert = app.issue_trusted(
        "newco",
        obgate::pki::CertSpec::tpp("NewCo Ltd", "0015800001NEWCO", "newco-app", now()),
    )?;
    let cert_path = cert.cert.to_string_lossy().to_string();
    let out = app.cli(&[
        "clients",
        "register",
        "--name",
        "NewCo",
        "--cert",
        &cert_path,
        "--roles",
        "AISP,CBPII",
        "--json",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registered: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(registered["client_id"], "newco-app");

    let again = app.cli(&[
        "clients", "register", "--name", "NewCo", "--cert", &cert_path, "--roles", "AISP",
    ])?;
    assert!(!again.status.success());
    assert!(String::from_utf8(again.stderr)?.contains("already exists"));

    let bad_roles = app.cli(&[
        "clients",
        "register",
        "--name",
        "X",
        "--cert",
        &cert_path,
        "--roles",
        "BANK",
        "--client-id",
        "x",
    ])?;
    assert!(String::from_utf8(bad_roles.stderr)?.contains("--roles"));

    let rogue = app.issue_untrusted("rogue-app")?;
    let untrusted = app.cli(&[
        "clients",
        "register",
        "--name",
        "R",
        "--cert",
        &rogue.cert.to_string_lossy(),
        "--roles",
        "AISP",
    ])?;
    assert!(!untrusted.status.success());
    assert!(String::from_utf8(untrusted.stderr)?.contains("tls_client_auth"));

    let list: Value = serde_json::from_slice(&app.cli(&["clients", "list", "--json"])?.stdout)?;
    let newco = list
        .as_array()
        .ok_or("not an array")?
        .iter()
        .find(|c| c["client_id"] == "newco-app")
        .ok_or("missing")?;
    assert_eq!(newco["status"], "active");
    assert_eq!(newco["roles"], serde_json::json!(["AISP", "CBPII"]));
    assert_eq!(newco["auth_method"], "tls_client_auth");
    assert_eq!(newco["cert_thumbprints"][0], cert.thumbprint()?);

    let token = app.token(&cert, "newco-app", "fundsconfirmations").await?;
    assert!(!token.is_empty());
    let show = app.cli(&["clients", "show", "nobody"])?;
    assert!(!show.status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpp_token_fetches_a_bound_token_with_the_oauth2_crate() -> TestResult {
    let app = spawn_app().await?;
    let (cert, key, ca) = (
        app.tpp_a.cert.to_string_lossy().to_string(),
        app.tpp_a.key.to_string_lossy().to_string(),
        app.ca.to_string_lossy().to_string(),
    );
    let out = app.cli(&[
        "tpp", "token", "--cert", &cert, "--key", &key, "--ca", &ca, "--scope", "accounts",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout)?;
    let token = body["access_token"].as_str().ok_or("no token")?;
    assert_eq!(
        claims_of(token)?["cnf"]["x5t#S256"],
        app.tpp_a.thumbprint()?
    );
    assert_eq!(body["scope"], "accounts");
    // Without --scope it asks for accounts (the gateway grants nothing unasked).
    let out = app.cli(&["tpp", "token", "--cert", &cert, "--key", &key, "--ca", &ca])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["scope"], "accounts");

    let out = app.cli(&[
        "tpp",
        "token",
        "--cert",
        &cert,
        "--key",
        &key,
        "--ca",
        &ca,
        "--client-id",
        "tpp-b",
    ])?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("invalid_client"));
    Ok(())
}

fn obgate(data: &std::path::Path, args: &[&str]) -> Res<std::process::Output> {
    Ok(std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_init_and_issue_never_overwrite_and_check_their_arguments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let out = obgate(&data, &["pki", "init"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["ca", "server", "demo-tpp", "operator"] {
        assert!(data.join(format!("pki/{file}.pem")).is_file(), "{file}.pem");
        assert!(data.join(format!("pki/{file}.key")).is_file(), "{file}.key");
    }
    let ca_before = std::fs::read(data.join("pki/ca.pem"))?;
    let again = obgate(&data, &["pki", "init"])?;
    assert!(String::from_utf8(again.stdout)?.contains("nothing created"));
    assert_eq!(std::fs::read(data.join("pki/ca.pem"))?, ca_before);

    let certs = dir.path().join("certs");
    let certs_arg = certs.to_string_lossy().to_string();
    let issue = |extra: &[&str]| -> Res<std::process::Output> {
        let mut args = vec!["pki", "issue", "--out", certs_arg.as_str()];
        args.extend_from_slice(extra);
        obgate(&data, &args)
    };
    let rsa = issue(&["--kind", "tpp", "--name", "acme", "--key-type", "rsa2048"])?;
    assert!(
        rsa.status.success(),
        "{}",
        String::from_utf8_lossy(&rsa.stderr)
    );
    let cert = openssl::x509::X509::from_pem(&std::fs::read(certs.join("acme.pem"))?)?;
    assert!(cert.public_key()?.rsa().is_ok());
    let subject = obgate::tls::peer::registration_record(&cert)
        .ok_or("unreadable")?
        .subject;
    assert_eq!(subject, "CN=acme,OU=0015800001OBGATEDEV,O=acme,C=GB");

    let twice = issue(&["--kind", "tpp", "--name", "acme"])?;
    assert!(!twice.status.success());
    assert!(String::from_utf8(twice.stderr)?.contains("never overwrites"));
    let roles_on_tpp = issue(&["--kind", "tpp", "--name", "b", "--roles", "portal"])?;
    assert!(String::from_utf8(roles_on_tpp.stderr)?.contains("--roles"));
    let no_roles = issue(&["--kind", "operator", "--name", "ops"])?;
    assert!(String::from_utf8(no_roles.stderr)?.contains("--roles is required"));
    let bad_role = issue(&["--kind", "operator", "--name", "ops", "--roles", "root"])?;
    assert!(String::from_utf8(bad_role.stderr)?.contains("unknown operator role"));
    let ops = issue(&["--kind", "operator", "--name", "ops", "--roles", "auditor"])?;
    assert!(ops.status.success());

    let missing_ca = obgate(
        &dir.path().join("elsewhere"),
        &[
            "pki", "issue", "--kind", "tpp", "--name", "x", "--out", &certs_arg,
        ],
    )?;
    assert!(String::from_utf8(missing_ca.stderr)?.contains("pki init"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_client_registered_by_the_cli_is_accepted_after_reload() -> TestResult {
    let app = spawn_app().await?;
    let spec = obgate::pki::CertSpec::tpp("Solo Ltd", "0015800001SOLO", "solo-app", now());
    let (cert, key) = obgate::pki::issue(&spec, None)?.write(&app.path("pki"), "solo")?;
    let solo = CertFiles { cert, key };
    assert!(
        app.client(&solo)?
            .get(format!("{}/jwks", app.mtls))
            .send()
            .await
            .is_err()
    );

    let path = solo.cert.to_string_lossy().to_string();
    let chained = app.cli(&[
        "clients", "register", "--name", "Solo", "--cert", &path, "--roles", "AISP",
    ])?;
    assert!(
        !chained.status.success(),
        "a self-signed cert cannot use tls_client_auth"
    );
    let out = app.cli(&[
        "clients",
        "register",
        "--name",
        "Solo",
        "--cert",
        &path,
        "--roles",
        "AISP",
        "--auth",
        "self_signed_tls_client_auth",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.reloader.reload().await?;
    let token = app.token(&solo, "solo-app", "accounts").await?;
    assert_eq!(claims_of(&token)?["cnf"]["x5t#S256"], solo.thumbprint()?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpp_consent_flow_walks_a_customer_consent_end_to_end() -> TestResult {
    use std::io::{BufRead, BufReader, Write};
    let app = spawn_app().await?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .arg("--config")
        .arg(&app.config_file)
        .arg("--data-dir")
        .arg(app.path("data"))
        .args(["tpp", "consent-flow", "--ca"])
        .arg(&app.ca)
        .arg("--cert")
        .arg(&app.tpp_a.cert)
        .arg("--key")
        .arg(&app.tpp_a.key)
        .args([
            "--scope",
            "accounts",
            "--redirect-uri",
            &redirect_uri("tpp-a"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    // The CLI prints the authorize URL on the issuer's base; the test's public listener runs on
    // an ephemeral port.
    // Keep reading stderr to the end, or the CLI's later prompts would hit a closed pipe.
    let (found, url) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(q) = line
                .trim()
                .strip_prefix("https://localhost:8444/authorize?")
                && let Some(tx) = found.take()
            {
                let _ = tx.send(q.to_string());
            }
        }
    });
    let url = url.await.map_err(|_| "the CLI printed no authorize URL")?;
    let url = format!("{}/authorize?{url}", app.public);
    let callback =
        crate::flows::customer_decides(&app, &url, "alice", crate::flows::first, "approve").await?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "{callback}")?;
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let tokens: Value = serde_json::from_slice(&out.stdout)?;
    let access = tokens["access_token"].as_str().ok_or("no access token")?;
    assert!(tokens["refresh_token"].is_string());
    let consent = tokens["consent_id"].as_str().ok_or("no consent id")?;
    assert_eq!(claims_of(access)?["consent_id"], consent);
    let res = app
        .client(&app.tpp_a)?
        .get(format!("{}{}", app.mtls, crate::flows::ACCOUNTS))
        .bearer_auth(access)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_seed_fills_an_empty_database_once() -> TestResult {
    let app = spawn_app().await?;
    let out = app.cli(&["sandbox-seed"])?;
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)?.contains("already seeded"));

    let (fresh, database) = match postgres_url() {
        Some(pg) => {
            let (url, name) = create_database(&pg).await?;
            (url, Some(name))
        }
        None => (format!("sqlite://{}", app.path("fresh.db").display()), None),
    };
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
            .arg("--config")
            .arg(&app.config_file)
            .arg("--data-dir")
            .arg(app.path("fresh-data"))
            .args(args)
            .env("OBGATE_DATABASE_URL", &fresh)
            .output()
    };
    assert!(run(&["migrate"])?.status.success());
    let out = run(&["sandbox-seed"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwords = std::fs::read_to_string(app.path("fresh-data/sandbox-customers.txt"))?;
    let users: Vec<&str> = passwords
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(users, ["alice", "bob", "carol"]);
    let again = run(&["sandbox-seed"])?;
    assert!(String::from_utf8(again.stdout)?.contains("already seeded"));
    assert_eq!(
        std::fs::read_to_string(app.path("fresh-data/sandbox-customers.txt"))?,
        passwords,
        "the passwords file is not rewritten"
    );
    if let Some(name) = database {
        let mut admin =
            <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_url().unwrap_or_default())
                .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await?;
    }
    Ok(())
}

/// `obgate serve` as a real process: SIGTERM stops it cleanly, and every audit event recorded
/// before the signal is in the log once it has exited, a refused handshake's too (recorded
/// without holding anything back, it may still be queued when the signal comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_on_sigterm_with_its_audit_log_flushed() -> TestResult {
    use std::io::Read;
    let app = spawn_app().await?;
    let free = || -> Res<std::net::SocketAddr> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    };
    let (mtls, public, ops) = (free()?, free()?, free()?);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .arg("--config")
        .arg(&app.config_file)
        .arg("--data-dir")
        .arg(app.path("data"))
        .arg("serve")
        .env("OBGATE_SERVER_LISTEN", mtls.to_string())
        .env("OBGATE_SERVER_PUBLIC_LISTEN", public.to_string())
        .env("OBGATE_SERVER_OPS_LISTEN", ops.to_string())
        .env("OBGATE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let health = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(r) = health.get(format!("http://{ops}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err("obgate serve did not become ready".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(health);
    let served = app
        .client(&app.tpp_a)?
        .get(format!("https://localhost:{}/jwks", mtls.port()))
        .send()
        .await?;
    assert_eq!(served.status(), 200);
    drop(served);

    let stranger = app.issue_untrusted("sigterm-stranger")?;
    let refused = app
        .client(&stranger)?
        .get(format!("https://localhost:{}/jwks", mtls.port()))
        .send()
        .await;
    assert!(refused.is_err(), "an untrusted certificate was let in");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(kill.success());
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    })
    .await?;
    assert!(status?.success(), "{stderr}");
    assert!(
        stderr.contains("the audit log is flushed"),
        "no flush reported: {stderr}"
    );
    let thumb = stranger.thumbprint()?;
    let events = app.audit().await?;
    assert!(
        events.iter().any(|e| e.route == "(tls-handshake)"
            && e.cert_thumbprint.as_deref() == Some(thumb.as_str())),
        "the refused handshake is not in the log"
    );
    Ok(())
}

/// The command a banner prints on the first line that begins with `start` (after its
/// indentation) or, failing that, contains it; continuation lines included.
fn banner_command(banner: &str, start: &str) -> Res<String> {
    let first = banner
        .lines()
        .position(|l| l.trim_start().starts_with(start))
        .or_else(|| banner.lines().position(|l| l.contains(start)))
        .unwrap_or(usize::MAX);
    let mut lines = banner.lines().skip(first);
    let mut command = String::new();
    for line in lines.by_ref() {
        command.push_str(line.trim_start());
        command.push('\n');
        if !line.ends_with('\\') && !line.ends_with('(') {
            break;
        }
    }
    if command.is_empty() {
        return Err(format!("no command starting {start:?} in the banner:\n{banner}").into());
    }
    Ok(command)
}

/// The embedded default as a newcomer starts it: the banner's commands work as pasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banners_commands_run_as_pasted() -> TestResult {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir()?;
    let free = || -> Res<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (mtls, public, ops) = (free()?, free()?, free()?);
    let env = [
        ("OBGATE_SERVER_LISTEN", format!("127.0.0.1:{mtls}")),
        ("OBGATE_SERVER_PUBLIC_LISTEN", format!("127.0.0.1:{public}")),
        ("OBGATE_SERVER_OPS_LISTEN", format!("127.0.0.1:{ops}")),
        (
            "OBGATE_SERVER_MTLS_URL",
            format!("https://localhost:{mtls}"),
        ),
        (
            "OBGATE_SERVER_PUBLIC_URL",
            format!("https://localhost:{public}"),
        ),
        (
            "OBGATE_POLICY_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies").to_string(),
        ),
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .current_dir(dir.path())
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("/connected-apps") {
                break;
            }
        }
        banner
    })
    .await?;
    let result = async {
        // The customers are listed as the file lists them: "username password".
        let file = std::fs::read_to_string(dir.path().join("obgate-data/sandbox-customers.txt"))?;
        for line in file.lines() {
            assert!(
                banner.contains(&format!("  {line}\n")),
                "{line:?} not in:\n{banner}"
            );
        }
        let token = banner_command(&banner, "TOKEN=$(")?;
        let consent = banner_command(&banner, "curl ")?;
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &format!("{token}{consent}")])
            .current_dir(dir.path())
            .output()?;
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.contains("AwaitingAuthorisation"),
            "the banner's token and consent commands: {body}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The consent flow runs as pasted (from anywhere: absolute paths), creates a consent,
        // prints the page to open, and says what to paste when given something else.
        let flow = banner_command(&banner, "tpp consent-flow")?;
        assert!(flow.contains("tpp consent-flow"), "{flow}");
        let elsewhere = tempfile::tempdir()?;
        let mut run = std::process::Command::new("bash")
            .args(["-c", &flow])
            .current_dir(elsewhere.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = run.stdin.take() {
            stdin.write_all(b"I copied the wrong thing\n")?;
        }
        let out = tokio::task::spawn_blocking(move || run.wait_with_output()).await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("created consent aac-"), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "https://localhost:{public}/authorize?client_id=demo-tpp"
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains("paste the whole address the browser was sent back to"),
            "{stderr}"
        );
        assert!(!stderr.contains("state in the callback"), "{stderr}");
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_mistakes_are_named_for_what_they_are() -> TestResult {
    let app = spawn_app().await?;
    // A key that is not the certificate's.
    let (cert, wrong_key, ca) = (
        app.tpp_a.cert.to_string_lossy().to_string(),
        app.tpp_b.key.to_string_lossy().to_string(),
        app.ca.to_string_lossy().to_string(),
    );
    let out = app.cli(&[
        "tpp", "token", "--cert", &cert, "--key", &wrong_key, "--ca", &ca,
    ])?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains(&format!(
            "--key {wrong_key} is not the private key of the certificate in --cert {cert}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("key values mismatch"), "{stderr}");

    // A port in use is reported before anything is created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let dir = tempfile::tempdir()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("serve")
        .env("OBGATE_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("server.listen") && stderr.contains("another obgate"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "files were created before the port was checked"
    );

    // Every option of the operator commands says what it is for.
    for command in [
        &["clients", "register", "--help"][..],
        &["clients", "suspend", "--help"],
        &["clients", "show", "--help"],
        &["tpp", "token", "--help"],
        &["tpp", "consent-flow", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
            .args(command)
            .output()?;
        let help = String::from_utf8(out.stdout)?;
        let lines: Vec<&str> = help.lines().map(str::trim).collect();
        // An option's help is on its line (after two spaces) or on the next one.
        let bare: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("--") || l.starts_with('<') || l.starts_with("-h"))
            .filter(|(i, l)| {
                !l.contains("  ")
                    && lines.get(i + 1).is_none_or(|next| {
                        next.is_empty() || next.starts_with('-') || next.starts_with('<')
                    })
            })
            .map(|(_, l)| *l)
            .collect();
        assert!(
            bare.is_empty(),
            "{command:?}: options without help: {bare:?}\n{help}"
        );
    }
    Ok(())
}
