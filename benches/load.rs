//! Load generator: starts the release `obgate` on its embedded default with one worker, drives
//! it over real mTLS from this process, and reports the server's CPU per operation (read from
//! /proc, so the client's own work is not counted).
//!
//!     cargo bench --bench load            # BENCH_N=2000 to change the count
//!
//! On the production backends instead of SQLite and in-process state (a fresh database is
//! created, migrated and dropped; Redis keys get a prefix of their own):
//!
//!     BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     BENCH_STATE_URL=redis://127.0.0.1:6379 cargo bench --bench load

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslStream, SslVersion};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Res<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

struct Server {
    child: Child,
    mtls: u16,
    public: u16,
}

/// A PostgreSQL database made for this run, dropped after it.
struct BenchDatabase {
    server_url: String,
    name: String,
}

impl BenchDatabase {
    fn create(server_url: &str) -> Res<(Self, String)> {
        let mut b = [0u8; 6];
        openssl::rand::rand_bytes(&mut b)?;
        let name = format!(
            "obgate_bench_{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        admin(server_url, &format!("CREATE DATABASE {name}"))?;
        let base = server_url.split_once('?').map_or(server_url, |(b, _)| b);
        let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
        let url = format!("{server}/{name}");
        let db = Self {
            server_url: server_url.to_string(),
            name,
        };
        Ok((db, url))
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        if let Err(e) = admin(&self.server_url, &format!("DROP DATABASE {}", self.name)) {
            eprintln!("could not drop database {}: {e}", self.name);
        }
    }
}

fn admin(url: &str, statement: &str) -> Res<()> {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut conn)
            .await?;
        Ok(())
    })
}

type Env = Vec<(&'static str, String)>;

/// `OBGATE_*` variables for the backends chosen by `BENCH_DATABASE_URL` and `BENCH_STATE_URL`.
fn backends() -> Res<(Option<BenchDatabase>, Env)> {
    let mut env = Vec::new();
    let database = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let (db, url) = BenchDatabase::create(&url)?;
            env.push(("OBGATE_DATABASE_URL", url));
            Some(db)
        }
        _ => None,
    };
    if let Ok(url) = std::env::var("BENCH_STATE_URL")
        && !url.is_empty()
    {
        let mut b = [0u8; 6];
        openssl::rand::rand_bytes(&mut b)?;
        let prefix: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let sep = if url.contains('?') { '&' } else { '?' };
        env.push((
            "OBGATE_STATE_URL",
            format!("{url}{sep}key_prefix=obgate-bench-{prefix}:"),
        ));
    }
    Ok((database, env))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, env: &[(&str, String)]) -> Res<Server> {
    let (mtls, public, ops) = (free_port()?, free_port()?, free_port()?);
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{mtls}\"\npublic_listen = \"127.0.0.1:{public}\"\n\
             ops_listen = \"127.0.0.1:{ops}\"\nmtls_url = \"https://localhost:{mtls}\"\n\
             public_url = \"https://localhost:{public}\"\nworkers = 1\n[policy]\ndir = \"{}\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies")
        ),
    )?;
    if env.iter().any(|(k, _)| *k == "OBGATE_DATABASE_URL") {
        let migrated = Command::new(env!("CARGO_BIN_EXE_obgate"))
            .arg("--config")
            .arg(&config)
            .arg("migrate")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .status()?;
        if !migrated.success() {
            return Err("obgate migrate failed".into());
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_obgate"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("serve")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .spawn()?;
    let server = Server {
        child,
        mtls,
        public,
    };
    for _ in 0..500 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", ops)) {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            if out.starts_with("HTTP/1.1 200") {
                return Ok(server);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("server did not start".into())
}

fn connector(dir: &Path, version: SslVersion, groups: Option<&str>) -> Res<SslConnector> {
    let pki = dir.join("data/pki");
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_ca_file(pki.join("ca.pem"))?;
    b.set_certificate_file(pki.join("demo-tpp.pem"), SslFiletype::PEM)?;
    b.set_private_key_file(pki.join("demo-tpp.key"), SslFiletype::PEM)?;
    b.set_min_proto_version(Some(version))?;
    b.set_max_proto_version(Some(version))?;
    if version == SslVersion::TLS1_2 {
        b.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256")?;
    }
    if let Some(groups) = groups {
        b.set_groups_list(groups)?;
    }
    Ok(b.build())
}

fn connect(c: &SslConnector, port: u16) -> Res<BufReader<SslStream<TcpStream>>> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_nodelay(true)?;
    Ok(BufReader::new(c.connect("localhost", tcp)?))
}

/// One HTTP/1.1 exchange on a kept-alive connection; returns (status, body).
fn exchange(conn: &mut BufReader<SslStream<TcpStream>>, request: &[u8]) -> Res<(u16, String)> {
    exchange_with_headers(conn, request).map(|(status, _, body)| (status, body))
}

type Headers = Vec<(String, String)>;

fn exchange_with_headers(
    conn: &mut BufReader<SslStream<TcpStream>>,
    request: &[u8],
) -> Res<(u16, Headers, String)> {
    conn.get_mut().write_all(request)?;
    let mut headers = Vec::new();
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line.split(' ').nth(1).ok_or("no status")?.parse()?;
    let mut length = 0;
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse()?;
            }
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((status, headers, String::from_utf8(body)?))
}

fn header<'h>(headers: &'h Headers, name: &str) -> Res<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("no {name} header").into())
}

fn hidden(html: &str, name: &str) -> Res<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).ok_or("no field")? + marker.len();
    let end = html[start..].find('"').ok_or("unterminated")?;
    Ok(html[start..start + end].to_string())
}

fn form_post(path: &str, cookie: &str, form: &[(&str, &str)]) -> Res<String> {
    let body = serde_urlencoded::to_string(form)?;
    Ok(format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// The customer's part, as a browser would: sign in as alice, share her first account, allow.
/// Returns the code from the redirect.
fn customer_approves(c: &SslConnector, public: u16, dir: &Path, request_uri: &str) -> Res<String> {
    let password = std::fs::read_to_string(dir.join("data/sandbox-customers.txt"))?
        .lines()
        .find_map(|l| l.strip_prefix("alice ").map(str::to_string))
        .ok_or("no alice")?;
    let mut browser = connect(c, public)?;
    let query =
        serde_urlencoded::to_string([("client_id", "demo-tpp"), ("request_uri", request_uri)])?;
    let (status, headers, page) = exchange_with_headers(
        &mut browser,
        format!("GET /authorize?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )?;
    if status != 200 {
        return Err(format!("authorize: {status} {page}").into());
    }
    let cookie = header(&headers, "set-cookie")?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let login = form_post(
        "/authorize/login",
        &cookie,
        &[
            ("csrf", &hidden(&page, "csrf")?),
            ("username", "alice"),
            ("password", &password),
        ],
    )?;
    let (status, headers, page) = exchange_with_headers(&mut browser, login.as_bytes())?;
    if status != 200 {
        return Err(format!("login: {status}").into());
    }
    // Signing in starts a new session.
    let cookie = header(&headers, "set-cookie")?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let decide = form_post(
        "/authorize/decision",
        &cookie,
        &[
            ("csrf", &hidden(&page, "csrf")?),
            ("decision", "approve"),
            ("account", &hidden(&page, "account")?),
        ],
    )?;
    let (status, headers, _) = exchange_with_headers(&mut browser, decide.as_bytes())?;
    if status != 303 {
        return Err(format!("decision: {status}").into());
    }
    let location = header(&headers, "location")?;
    let query = location.split_once('?').ok_or("no query")?.1;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)?;
    pairs
        .into_iter()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v)
        .ok_or_else(|| "no code".into())
}

fn measure(name: &str, pid: u32, n: usize, mut op: impl FnMut() -> Res<()>) -> Res<()> {
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    for _ in 0..n {
        op()?;
    }
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds(pid)? - cpu0;
    println!(
        "{name:<46} {n:>6} ops  {:>8.0} µs server CPU/op  {:>8.0} ops/s (one client, sequential)",
        cpu / n as f64 * 1e6,
        n as f64 / wall
    );
    Ok(())
}

fn main() -> Res<()> {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let (_database, env) = backends()?;
    let server = start(dir.path(), &env)?;
    let pid = server.child.id();
    let port = server.mtls;
    let on = |var: &str, set: &'static str, unset: &'static str| {
        if env.iter().any(|(k, _)| *k == var) {
            set
        } else {
            unset
        }
    };
    println!(
        "obgate {} (release), one worker, pid {pid}; database {}, state {}",
        env!("CARGO_PKG_VERSION"),
        on("OBGATE_DATABASE_URL", "PostgreSQL", "SQLite"),
        on("OBGATE_STATE_URL", "Redis", "in-process"),
    );

    let handshakes = [
        (
            "full mTLS handshake, TLS 1.3, X25519MLKEM768 (default)",
            SslVersion::TLS1_3,
            None,
        ),
        (
            "full mTLS handshake, TLS 1.3, X25519 (OpenSSL 3.0 clients)",
            SslVersion::TLS1_3,
            Some("X25519"),
        ),
        (
            "full mTLS handshake, TLS 1.2, ECDHE-ECDSA-AES128-GCM",
            SslVersion::TLS1_2,
            None,
        ),
    ];
    for (label, version, groups) in handshakes {
        let c = connector(dir.path(), version, groups)?;
        measure(label, pid, n, || {
            let mut conn = connect(&c, port)?;
            let _ = conn.get_mut().shutdown();
            Ok(())
        })?;
    }

    let c = connector(dir.path(), SslVersion::TLS1_3, None)?;
    let mut conn = connect(&c, port)?;
    let form = "grant_type=client_credentials&client_id=demo-tpp&scope=accounts";
    let token_request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut token = String::new();
    measure("POST /token (mint ES256, bound; audited)", pid, n, || {
        let (status, body) = exchange(&mut conn, token_request.as_bytes())?;
        if status != 200 {
            return Err(format!("token: {status} {body}").into());
        }
        token = body;
        Ok(())
    })?;
    let token: serde_json::Value = serde_json::from_str(&token)?;
    let token = token["access_token"]
        .as_str()
        .ok_or("no token")?
        .to_string();

    let body = r#"{"Data":{"Permissions":["ReadAccountsBasic"]},"Risk":{}}"#;
    let create = format!(
        "POST /open-banking/v3.1/aisp/account-access-consents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, created) = exchange(&mut conn, create.as_bytes())?;
    if status != 201 {
        return Err(format!("consent: {status} {created}").into());
    }
    let created: serde_json::Value = serde_json::from_str(&created)?;
    let id = created["Data"]["ConsentId"].as_str().ok_or("no id")?;
    let read = format!(
        "GET /open-banking/v3.1/aisp/account-access-consents/{id} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    measure(
        "GET consent (verify ES256 + binding + policy; audited)",
        pid,
        n,
        || {
            let (status, _) = exchange(&mut conn, read.as_bytes())?;
            if status != 200 {
                return Err(format!("read: {status}").into());
            }
            Ok(())
        },
    )?;
    measure(
        "POST consent (verify + validate + insert; audited)",
        pid,
        n,
        || {
            let (status, _) = exchange(&mut conn, create.as_bytes())?;
            if status != 201 {
                return Err(format!("create: {status}").into());
            }
            Ok(())
        },
    )?;
    // Many clients at once: the audit writer commits their events in shared batches.
    const CLIENTS: usize = 16;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (c, read) = (&c, &read);
                scope.spawn(move || -> Result<(), String> {
                    let mut conn = connect(c, port).map_err(|e| e.to_string())?;
                    for _ in 0..n / CLIENTS {
                        let (status, _) =
                            exchange(&mut conn, read.as_bytes()).map_err(|e| e.to_string())?;
                        if status != 200 {
                            return Err(format!("read: {status}"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    for r in results {
        r?;
    }
    let wall = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds(pid)? - cpu0;
    let done = (n / CLIENTS * CLIENTS) as f64;
    println!(
        "{:<46} {:>6} ops  {:>8.0} µs server CPU/op  {:>8.0} ops/s ({CLIENTS} clients, keep-alive; handshakes included)",
        "GET consent, concurrent",
        done,
        cpu / done * 1e6,
        done / wall
    );
    // A customer's consent: PAR, the browser's part, the code exchange; then the consent-bound
    // resource reads and refreshes.
    let body = r#"{"Data":{"Permissions":["ReadAccountsBasic","ReadBalances"]},"Risk":{}}"#;
    let create_shared = format!(
        "POST /open-banking/v3.1/aisp/account-access-consents HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_, created) = exchange(&mut conn, create_shared.as_bytes())?;
    let created: serde_json::Value = serde_json::from_str(&created)?;
    let consent = created["Data"]["ConsentId"].as_str().ok_or("no consent")?;
    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = {
        use base64::Engine;
        let d = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), verifier.as_bytes())?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
    };
    let claims =
        serde_json::json!({"id_token": {"openbanking_intent_id": {"value": consent}}}).to_string();
    let par = serde_urlencoded::to_string([
        ("client_id", "demo-tpp"),
        ("response_type", "code"),
        ("redirect_uri", "https://localhost/callback"),
        ("scope", "openid accounts"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("claims", claims.as_str()),
    ])?;
    let (status, pushed) = exchange(&mut conn, format!(
        "POST /par HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{par}",
        par.len()).as_bytes())?;
    if status != 201 {
        return Err(format!("par: {status} {pushed}").into());
    }
    let pushed: serde_json::Value = serde_json::from_str(&pushed)?;
    let request_uri = pushed["request_uri"].as_str().ok_or("no request_uri")?;
    let code = customer_approves(&c, server.public, dir.path(), request_uri)?;
    let exchange_form = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("client_id", "demo-tpp"),
        ("code", code.as_str()),
        ("redirect_uri", "https://localhost/callback"),
        ("code_verifier", verifier),
    ])?;
    let (status, tokens) = exchange(&mut conn, format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{exchange_form}",
        exchange_form.len()).as_bytes())?;
    if status != 200 {
        return Err(format!("code exchange: {status} {tokens}").into());
    }
    let tokens: serde_json::Value = serde_json::from_str(&tokens)?;
    let access = tokens["access_token"].as_str().ok_or("no access token")?;
    let refresh = tokens["refresh_token"].as_str().ok_or("no refresh token")?;
    let accounts_request = format!(
        "GET /open-banking/v3.1/aisp/accounts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {access}\r\n\r\n"
    );
    let (_, accounts) = exchange(&mut conn, accounts_request.as_bytes())?;
    let accounts: serde_json::Value = serde_json::from_str(&accounts)?;
    let account = accounts["Data"]["Account"][0]["AccountId"]
        .as_str()
        .ok_or("no account")?;
    let balances = format!(
        "GET /open-banking/v3.1/aisp/accounts/{account}/balances HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {access}\r\n\r\n"
    );
    measure(
        "GET balances (token + consent + account; audited)",
        pid,
        n,
        || {
            let (status, body) = exchange(&mut conn, balances.as_bytes())?;
            if status != 200 {
                return Err(format!("balances: {status} {body}").into());
            }
            Ok(())
        },
    )?;
    let refresh_form = serde_urlencoded::to_string([
        ("grant_type", "refresh_token"),
        ("client_id", "demo-tpp"),
        ("refresh_token", refresh),
    ])?;
    let refresh_request = format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{refresh_form}",
        refresh_form.len()
    );
    measure(
        "POST /token refresh_token (consent check, mint; audited)",
        pid,
        n,
        || {
            let (status, body) = exchange(&mut conn, refresh_request.as_bytes())?;
            if status != 200 {
                return Err(format!("refresh: {status} {body}").into());
            }
            Ok(())
        },
    )?;
    measure("GET /jwks keep-alive (no token; audited)", pid, n, || {
        let (status, _) = exchange(&mut conn, b"GET /jwks HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        if status != 200 {
            return Err(format!("jwks: {status}").into());
        }
        Ok(())
    })?;
    Ok(())
}
