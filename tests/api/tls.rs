//! The TLS frontend: who gets past the handshake, and the record of who did not.

use std::net::TcpStream;

use obgate::pki::{CertSpec, Usage};
use openssl::ssl::{SslConnector, SslMethod, SslVersion};

use crate::helpers::*;

/// An OpenSSL client for protocol-level checks the HTTP client cannot express.
fn openssl_client(
    app: &TestApp,
    cert: Option<&CertFiles>,
    configure: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder) -> Res<()>,
) -> Res<SslConnector> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_ca_file(&app.ca)?;
    if let Some(c) = cert {
        b.set_certificate_file(&c.cert, openssl::ssl::SslFiletype::PEM)?;
        b.set_private_key_file(&c.key, openssl::ssl::SslFiletype::PEM)?;
    }
    configure(&mut b)?;
    Ok(b.build())
}

/// Handshakes with `addr` and makes one request, so that a refusal shows however late it comes.
fn raw_connect(
    addr: &str,
    app: &TestApp,
    cert: Option<&CertFiles>,
    configure: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder) -> Res<()>,
) -> Res<openssl::ssl::SslStream<TcpStream>> {
    let port = addr.rsplit(':').next().ok_or("no port")?;
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}"))?;
    let mut stream = openssl_client(app, cert, configure)?.connect("localhost", tcp)?;
    // With TLS 1.3 the server's verdict on our certificate arrives after our side finished:
    // a round trip makes it visible.
    use std::io::{Read, Write};
    stream.write_all(b"GET /jwks HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf)?;
    if &buf[..9] != b"HTTP/1.1 " {
        return Err("no HTTP response".into());
    }
    Ok(stream)
}

/// Asserts that `cert` cannot get past the mTLS handshake and that the refusal was audited with
/// the certificate's thumbprint and `reason`.
async fn assert_refused_at_handshake(app: &TestApp, cert: &CertFiles, reason: &str) -> TestResult {
    let attempt = app
        .client(cert)?
        .get(format!("{}/jwks", app.mtls))
        .send()
        .await;
    assert!(
        attempt.is_err(),
        "{reason}: the certificate passed the handshake"
    );
    let thumb = cert.thumbprint()?;
    let event = app
        .await_audit(|e| {
            e.route == "(tls-handshake)" && e.cert_thumbprint.as_deref() == Some(thumb.as_str())
        })
        .await?;
    assert_eq!(event.outcome, "denied");
    assert!(
        event
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with(reason)),
        "expected {reason}: {event:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_certificate_from_the_trusted_ca_completes_the_handshake() -> TestResult {
    let app = spawn_app().await?;
    let res = app
        .client(&app.tpp_a)?
        .get(format!("{}/jwks", app.mtls))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_is_refused_at_the_handshake_and_audited() -> TestResult {
    let app = spawn_app().await?;
    let err = app
        .anonymous()?
        .get(format!("{}/jwks", app.mtls))
        .send()
        .await;
    assert!(
        err.is_err(),
        "the mTLS listener served a client with no certificate"
    );
    let event = app
        .await_audit(|e| {
            e.route == "(tls-handshake)"
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("no_certificate"))
        })
        .await?;
    assert_eq!(event.outcome, "denied");
    assert_eq!(event.peer_ip.as_deref(), Some("127.0.0.1"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused_at_the_handshake_and_audited() -> TestResult
{
    let app = spawn_app().await?;
    let rogue = app.issue_untrusted("rogue")?;
    assert_refused_at_handshake(&app, &rogue, "untrusted_issuer").await?;
    let events = app.audit().await?;
    assert!(events.iter().any(|e| {
        e.cert_subject
            .as_deref()
            .is_some_and(|s| s.contains("CN=rogue"))
    }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_at_the_handshake_and_audited() -> TestResult {
    let app = spawn_app().await?;
    let mut spec = CertSpec::tpp("Alpha Ltd", "0015800001ALPHA", "tpp-old", now());
    spec.not_before = now() - 400 * DAY;
    spec.not_after = now() - DAY;
    let expired = app.issue_trusted("expired", spec)?;
    assert_refused_at_handshake(&app, &expired, "certificate_expired").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_auth_only_certificate_is_refused_as_a_client_certificate() -> TestResult {
    let app = spawn_app().await?;
    let mut spec = CertSpec::tpp("Alpha Ltd", "0015800001ALPHA", "tpp-server-eku", now());
    spec.usage = Usage::ServerAuthOnly;
    let wrong = app.issue_trusted("server-eku", spec)?;
    assert_refused_at_handshake(&app, &wrong, "certificate_wrong_purpose").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_self_signed_certificate_is_refused_but_a_registered_one_is_accepted()
-> TestResult {
    let app = spawn_app().await?;
    let registered = app
        .client(&app.self_signed)?
        .get(format!("{}/jwks", app.mtls))
        .send()
        .await?;
    assert_eq!(registered.status(), 200);

    let stranger_spec = CertSpec::tpp("Stranger Ltd", "0015800001STRANGE", "stranger", now());
    let stranger = obgate::pki::issue(&stranger_spec, None)?;
    let (cert, key) = stranger.write(&app.path("pki"), "stranger")?;
    let files = CertFiles { cert, key };
    assert!(
        app.client(&files)?
            .get(format!("{}/jwks", app.mtls))
            .send()
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_refused() -> TestResult {
    let app = spawn_app().await?;
    let mtls = app.mtls.clone();
    let result = raw_connect(&mtls, &app, Some(&app.tpp_a), |b| {
        b.set_security_level(0);
        b.set_min_proto_version(Some(SslVersion::TLS1_1))?;
        b.set_max_proto_version(Some(SslVersion::TLS1_1))?;
        b.set_cipher_list("ALL:@SECLEVEL=0")?;
        Ok(())
    });
    assert!(result.is_err(), "TLS 1.1 was accepted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_fapi_tls_1_2_suites_are_accepted() -> TestResult {
    let app = spawn_app().await?;
    let tls12 = |suite: &'static str| {
        move |b: &mut openssl::ssl::SslConnectorBuilder| -> Res<()> {
            b.set_max_proto_version(Some(SslVersion::TLS1_2))?;
            b.set_cipher_list(suite)?;
            Ok(())
        }
    };
    raw_connect(
        &app.mtls,
        &app,
        Some(&app.tpp_a),
        tls12("ECDHE-ECDSA-AES128-GCM-SHA256"),
    )?;
    for refused in [
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA",
    ] {
        let result = raw_connect(&app.mtls, &app, Some(&app.tpp_a), tls12(refused));
        assert!(result.is_err(), "non-FAPI suite {refused} was accepted");
    }
    Ok(())
}

/// Relays one TLS 1.2 handshake to `addr` and reports whether the server's plaintext first
/// flight contained a CertificateRequest (handshake type 13).
fn server_requests_certificate(addr: &str, app: &TestApp) -> Res<bool> {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let port = addr.rsplit(':').next().ok_or("no port")?.to_string();
    let relay = std::net::TcpListener::bind("127.0.0.1:0")?;
    let relay_addr = relay.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Arc::clone(&seen);
    let thread = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut client, _) = relay.accept()?;
        let mut server = TcpStream::connect(format!("127.0.0.1:{port}"))?;
        let mut client_to_server = client.try_clone()?;
        let mut server_to_client = server.try_clone()?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut client_to_server, &mut server);
            // Pass the client's close on, so the server closes too and the relay ends.
            let _ = server.shutdown(std::net::Shutdown::Write);
        });
        let mut buf = [0u8; 4096];
        loop {
            let n = server_to_client.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if let Ok(mut seen) = recorder.lock() {
                seen.extend_from_slice(&buf[..n]);
            }
            client.write_all(&buf[..n])?;
        }
    });
    let client = openssl_client(app, Some(&app.tpp_a), |b| {
        b.set_max_proto_version(Some(SslVersion::TLS1_2))?;
        Ok(())
    })?;
    let stream = client.connect("localhost", TcpStream::connect(relay_addr)?)?;
    drop(stream);
    let _ = thread.join();
    let bytes = seen.lock().map_err(|_| "poisoned")?.clone();
    // Walk the plaintext handshake records up to ServerHelloDone.
    let mut handshake = Vec::new();
    let mut rest = bytes.as_slice();
    while rest.len() >= 5 && rest[0] == 22 {
        let len = usize::from(rest[3]) << 8 | usize::from(rest[4]);
        handshake.extend_from_slice(rest.get(5..5 + len).ok_or("truncated record")?);
        rest = &rest[5 + len..];
    }
    let mut msgs = handshake.as_slice();
    while msgs.len() >= 4 {
        let (kind, len) = (
            msgs[0],
            usize::from(msgs[1]) << 16 | usize::from(msgs[2]) << 8 | usize::from(msgs[3]),
        );
        match kind {
            13 => return Ok(true),
            14 => return Ok(false),
            _ => msgs = msgs.get(4 + len..).ok_or("truncated message")?,
        }
    }
    Err("no ServerHelloDone seen".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_never_requests_a_certificate() -> TestResult {
    let app = spawn_app().await?;
    assert!(
        !server_requests_certificate(&app.public, &app)?,
        "public listener sent a CertificateRequest"
    );
    // The same probe sees the request on the mTLS listener, so it can tell the difference.
    assert!(server_requests_certificate(&app.mtls, &app)?);
    raw_connect(&app.public, &app, None, |_| Ok(()))?;
    let res = app
        .anonymous()?
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.public
        ))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let meta: serde_json::Value = res.json().await?;
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        meta["mtls_endpoint_aliases"]["token_endpoint"],
        format!("{}/token", app.settings.server.mtls_url)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_by_a_reloaded_crl_is_refused_at_the_handshake() -> TestResult {
    let app =
        spawn_app_with(|s| s.tls.crl = vec![s.tls.client_ca[0].with_file_name("crl.pem")]).await?;
    let jwks =
        |c: &CertFiles| -> Res<_> { Ok(app.client(c)?.get(format!("{}/jwks", app.mtls)).send()) };
    assert_eq!(
        jwks(&app.tpp_a)?.await?.status(),
        200,
        "an empty CRL revokes nothing"
    );

    // A connection opened before the revocation, kept alive across it.
    let kept = app.client(&app.tpp_a)?;
    let token_request = || {
        kept.post(format!("{}/token", app.mtls))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "tpp-a"),
                ("scope", "accounts"),
            ])
            .send()
    };
    assert_eq!(token_request().await?.status(), 200);

    let ca = obgate::pki::Issued::load(&app.ca, &app.path("pki/ca.key"))?;
    write_crl(&ca, &app.path("pki/crl.pem"), &[&app.tpp_a])?;
    assert_eq!(
        jwks(&app.tpp_a)?.await?.status(),
        200,
        "CRLs take effect on reload, not before"
    );
    app.reloader.reload().await?;

    assert_refused_at_handshake(&app, &app.tpp_a, "certificate_revoked").await?;
    // The open connection (still pooled: the server keeps idle connections 5 s) may not go on
    // under the old verdict.
    let res = token_request().await?;
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await?;
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("reloaded"), "{body}");
    assert_eq!(
        jwks(&app.tpp_b)?.await?.status(),
        200,
        "other certificates are unaffected"
    );

    std::fs::write(app.path("pki/crl.pem"), "not a CRL")?;
    assert!(
        app.reloader.reload().await.is_err(),
        "a broken CRL must not be loaded"
    );
    assert_eq!(
        jwks(&app.tpp_b)?.await?.status(),
        200,
        "a failed reload keeps the last good state"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_self_signed_client_is_accepted_while_crls_are_configured() -> TestResult {
    // CRL checking covers every certificate below an anchor; a registered self-signed leaf has
    // no anchor and no CRL, and must pass on OpenSSL 3.0 (which asks for one) as on 3.6.
    let app =
        spawn_app_with(|s| s.tls.crl = vec![s.tls.client_ca[0].with_file_name("crl.pem")]).await?;
    let token = app.token(&app.self_signed, "tpp-self", "accounts").await?;
    let res = app
        .client(&app.self_signed)?
        .get(format!("{}/jwks", app.mtls))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let ca = obgate::pki::Issued::load(&app.ca, &app.path("pki/ca.key"))?;
    write_crl(&ca, &app.path("pki/crl.pem"), &[&app.tpp_a])?;
    app.reloader.reload().await?;
    assert_refused_at_handshake(&app, &app.tpp_a, "certificate_revoked").await?;
    app.token(&app.self_signed, "tpp-self", "accounts").await?;
    Ok(())
}

/// A loopback relay to `target` that connects at once (so the server starts its handshake
/// with the trust in force then) but passes no byte until `gate` opens.
async fn held_relay(
    target: &str,
    gate: std::sync::Arc<tokio::sync::Notify>,
) -> Res<(u16, tokio::sync::oneshot::Receiver<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let target = target.to_string();
    let (connected, upstream_open) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
            return;
        };
        let _ = connected.send(());
        gate.notified().await;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    Ok((port, upstream_open))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_under_way_across_a_crl_reload_cannot_act_on_the_old_verdict() -> TestResult {
    let app =
        spawn_app_with(|s| s.tls.crl = vec![s.tls.client_ca[0].with_file_name("crl.pem")]).await?;
    let addr = app
        .mtls
        .trim_start_matches("https://")
        .replace("localhost", "127.0.0.1");
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let (port, upstream_open) = held_relay(&addr, std::sync::Arc::clone(&gate)).await?;
    let client = app.client(&app.tpp_a)?;
    let url = format!("https://localhost:{port}/token");
    let request = tokio::spawn(async move {
        client
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "tpp-a"),
                ("scope", "accounts"),
            ])
            .send()
            .await
    });
    upstream_open.await?;
    // The server took the connection under the old CRL; give its accept a moment to begin.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ca = obgate::pki::Issued::load(&app.ca, &app.path("pki/ca.key"))?;
    write_crl(&ca, &app.path("pki/crl.pem"), &[&app.tpp_a])?;
    app.reloader.reload().await?;
    gate.notify_one();
    match request.await? {
        // Refused at the handshake (it read the new CRL after all): fine.
        Err(_) => {}
        Ok(res) => {
            let status = res.status();
            let body: serde_json::Value = res.json().await?;
            assert_eq!(
                status, 401,
                "a token was minted for a revoked certificate: {body}"
            );
            let description = body["error_description"].as_str().unwrap_or_default();
            assert!(description.contains("reloaded"), "{body}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_from_before_a_crl_reload_is_checked_against_the_new_crl() -> TestResult {
    let app =
        spawn_app_with(|s| s.tls.crl = vec![s.tls.client_ca[0].with_file_name("crl.pem")]).await?;
    // No pooling: every request is a new connection, resuming the last session when it can.
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&app.ca)? {
        roots.add(ca?)?;
    }
    let chain = CertificateDer::pem_file_iter(&app.tpp_a.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&app.tpp_a.key)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .pool_max_idle_per_host(0)
        .build()?;
    let jwks = || client.get(format!("{}/jwks", app.mtls)).send();
    assert_eq!(jwks().await?.status(), 200);
    assert_eq!(jwks().await?.status(), 200, "resumed");

    let ca = obgate::pki::Issued::load(&app.ca, &app.path("pki/ca.key"))?;
    write_crl(&ca, &app.path("pki/crl.pem"), &[&app.tpp_a])?;
    app.reloader.reload().await?;
    assert!(
        jwks().await.is_err(),
        "a session from before the reload was resumed past the new CRL"
    );
    Ok(())
}

/// Sends `head`, then trickles `body` a byte every 300 ms, and returns what came back and
/// whether the server then closed the connection.
fn trickle<S: std::io::Read + std::io::Write>(
    mut stream: S,
    set_timeout: impl Fn(&S, std::time::Duration) -> std::io::Result<()>,
    head: &str,
    body: &[u8],
) -> Res<(String, bool)> {
    use std::io::ErrorKind;
    let started = std::time::Instant::now();
    set_timeout(&stream, std::time::Duration::from_millis(300))?;
    let mut head_bytes = head.as_bytes().iter();
    let mut body_bytes = body.iter();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "no answer 15 s into a trickled request"
        );
        // The head all at once when `body` is given; otherwise the head itself is trickled.
        let next: Option<Vec<u8>> = if body.is_empty() {
            head_bytes.next().map(|b| vec![*b])
        } else if let Some(b) = head_bytes.next() {
            let mut all = vec![*b];
            all.extend(head_bytes.by_ref().copied());
            Some(all)
        } else {
            body_bytes.next().map(|b| vec![*b])
        };
        if let Some(bytes) = next {
            let _ = stream.write_all(&bytes).and_then(|()| stream.flush());
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok((String::from_utf8_lossy(&answer).into_owned(), true)),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ok((String::from_utf8_lossy(&answer).into_owned(), true)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_past_the_deadline_is_answered_408_and_closed_on_every_listener()
-> TestResult {
    let app = spawn_app_with(|s| s.server.request_timeout_secs = 2).await?;
    let port = |url: &str| -> Res<u16> { Ok(url.rsplit(':').next().ok_or("no port")?.parse()?) };
    let (mtls, public, ops) = (port(&app.mtls)?, port(&app.public)?, port(&app.ops)?);
    let tls_timeout =
        |s: &openssl::ssl::SslStream<TcpStream>, d| s.get_ref().set_read_timeout(Some(d));
    let body = [b'a'; 100];

    let tcp = TcpStream::connect(("127.0.0.1", mtls))?;
    let stream = openssl_client(&app, Some(&app.tpp_a), |_| Ok(()))?.connect("localhost", tcp)?;
    let head = "POST /token HTTP/1.1\r\nHost: localhost\r\nx-fapi-interaction-id: trickle-1\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";
    let (answer, closed) =
        tokio::task::spawn_blocking(move || trickle(stream, tls_timeout, head, &body)).await??;
    assert!(answer.starts_with("HTTP/1.1 408"), "mTLS: {answer}");
    assert!(closed, "mTLS: the connection stays open");
    let event = app.await_audit(|e| e.interaction_id == "trickle-1").await?;
    assert_eq!(event.status, 408);
    assert_eq!(event.reason.as_deref(), Some("request_timeout"));

    let tcp = TcpStream::connect(("127.0.0.1", public))?;
    let stream = openssl_client(&app, None, |_| Ok(()))?.connect("localhost", tcp)?;
    let head = "POST /connected-apps/login HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n";
    let (answer, closed) =
        tokio::task::spawn_blocking(move || trickle(stream, tls_timeout, head, &body)).await??;
    assert!(answer.starts_with("HTTP/1.1 408"), "public: {answer}");
    assert!(closed, "public: the connection stays open");

    // The ops listener reads no bodies; a head trickled past the deadline is cut off too.
    let tcp = TcpStream::connect(("127.0.0.1", ops))?;
    let head = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let (answer, closed) = tokio::task::spawn_blocking(move || {
        trickle(
            tcp,
            |s: &TcpStream, d| s.set_read_timeout(Some(d)),
            head,
            &[],
        )
    })
    .await??;
    assert!(answer.starts_with("HTTP/1.1 408"), "ops: {answer}");
    assert!(closed, "ops: the connection stays open");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_stays_one_and_a_tpp_authenticates_over_resumed_tls_sessions() -> TestResult {
    let app = spawn_app().await?;
    let cert = app.issue_trusted(
        "portal-op",
        obgate::pki::CertSpec::operator("portal-op", &["portal".to_string()], now()),
    )?;
    let portal = app.client_resuming(&cert)?;
    let url = format!("{}/admin/clients/tpp-a/certificates", app.mtls);
    for attempt in 0..3 {
        let res = portal.get(&url).send().await?;
        assert_eq!(
            res.status(),
            200,
            "request {attempt} (1 and 2 resume the session)"
        );
    }
    let tpp = app.client_resuming(&app.tpp_a)?;
    for attempt in 0..3 {
        let res = tpp
            .post(format!("{}/token", app.mtls))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "tpp-a"),
                ("scope", "accounts"),
            ])
            .send()
            .await?;
        assert_eq!(res.status(), 200, "token request {attempt}");
    }
    Ok(())
}
