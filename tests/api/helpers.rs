//! Per-test world: its own PKI, data directory, registered clients, and a real server on
//! ephemeral ports, called over real mTLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use obgate::config::Settings;
use obgate::pki::{CertSpec, Issued, Usage, issue};
use obgate::registry::AuthMethod;
use obgate::startup::Application;
use obgate::store::{AuditRecord, Store};
use openssl::hash::MessageDigest;
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const DAY: i64 = 86_400;

pub fn now() -> i64 {
    obgate::clock::now().unix_timestamp()
}

/// A certificate and key written to disk.
#[derive(Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn thumbprint(&self) -> Res<String> {
        let x = openssl::x509::X509::from_pem(&std::fs::read(&self.cert)?)?;
        Ok(URL_SAFE_NO_PAD.encode(x.digest(MessageDigest::sha256())?))
    }
}

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub config_file: PathBuf,
    pub mtls: String,
    pub public: String,
    pub ops: String,
    pub ca: PathBuf,
    pub tpp_a: CertFiles,
    pub tpp_b: CertFiles,
    pub aisp_only: CertFiles,
    pub self_signed: CertFiles,
    pub store: Store,
    pub reloader: obgate::startup::Reloader,
    /// The gateway's clock: tests move it forward instead of sleeping.
    pub clock: obgate::clock::Clock,
    /// Sandbox bank customers and their passwords.
    pub customers: Vec<(String, String)>,
    /// The PostgreSQL database this test created, dropped with it.
    database: Option<String>,
    handle: actix_server::ServerHandle,
}

/// The redirect URI registered for the client whose certificate CN is `cn`.
pub fn redirect_uri(cn: &str) -> String {
    format!("https://{cn}.example/cb")
}

fn write(issued: &Issued, dir: &Path, name: &str) -> Res<CertFiles> {
    let (cert, key) = issued.write(dir, name)?;
    Ok(CertFiles { cert, key })
}

impl TestApp {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Issues and writes another certificate from the trusted test CA.
    pub fn issue_trusted(&self, name: &str, spec: CertSpec) -> Res<CertFiles> {
        let ca = Issued::load(&self.ca, &self.path("pki/ca.key"))?;
        write(&issue(&spec, Some(&ca))?, &self.path("pki"), name)
    }

    /// Issues a certificate from a CA the gateway does not trust.
    pub fn issue_untrusted(&self, name: &str) -> Res<CertFiles> {
        let rogue = issue(&CertSpec::ca("rogue CA", now()), None)?;
        let spec = CertSpec::tpp("Rogue Ltd", "0015800001ROGUE", name, now());
        write(&issue(&spec, Some(&rogue))?, &self.path("pki"), name)
    }

    /// An HTTP client presenting `c` over rustls: a TLS stack independent of the server's.
    pub fn client(&self, c: &CertFiles) -> Res<reqwest::Client> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&c.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&c.key)?;
        let config = self.rustls()?.with_client_auth_cert(chain, key)?;
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()?)
    }

    /// Like [`Self::client`], but every request opens a new connection, resuming the last TLS
    /// session when it can (as browsers and busy TPPs do).
    pub fn client_resuming(&self, c: &CertFiles) -> Res<reqwest::Client> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&c.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&c.key)?;
        let config = self.rustls()?.with_client_auth_cert(chain, key)?;
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .pool_max_idle_per_host(0)
            .build()?)
    }

    /// A rustls client with no certificate at all.
    pub fn anonymous(&self) -> Res<reqwest::Client> {
        let config = self.rustls()?.with_no_client_auth();
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()?)
    }

    /// A browser's client: no certificate, redirects not followed (tests read `Location`).
    pub fn anonymous_no_redirects(&self) -> Res<reqwest::Client> {
        let config = self.rustls()?.with_no_client_auth();
        Ok(reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .redirect(reqwest::redirect::Policy::none())
            .build()?)
    }

    fn rustls(
        &self,
    ) -> Res<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&self.ca)? {
            roots.add(ca?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots))
    }

    /// A client-credentials token for the client whose certificate is `c`.
    pub async fn token(&self, c: &CertFiles, client_id: &str, scope: &str) -> Res<String> {
        let res = self
            .client(c)?
            .post(format!("{}/token", self.mtls))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("scope", scope),
            ])
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        if status != 200 {
            return Err(format!("token request failed: {status} {body}").into());
        }
        Ok(body["access_token"]
            .as_str()
            .ok_or("no access_token")?
            .to_string())
    }

    /// Signs arbitrary claims and header fields with the gateway's real signing key.
    pub fn forge(&self, header: Value, claims: &Value) -> Res<String> {
        let pem = std::fs::read(self.path("data/keys/es256.pem"))?;
        let der = openssl::pkey::PKey::private_key_from_pem(&pem)?.private_key_to_pkcs8()?;
        let key = jsonwebtoken::EncodingKey::from_ec_der(&der);
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &key,
            jsonwebtoken::Algorithm::ES256,
        )?;
        Ok(format!("{signing_input}.{sig}"))
    }

    /// All audit events, oldest first.
    pub async fn audit(&self) -> Res<Vec<AuditRecord>> {
        Ok(self
            .store
            .audit_events(&obgate::store::AuditQuery {
                limit: 100_000,
                ..Default::default()
            })
            .await?)
    }

    /// The audit events of one interaction.
    pub async fn audit_of(&self, interaction_id: &str) -> Res<Vec<AuditRecord>> {
        Ok(self
            .audit()
            .await?
            .into_iter()
            .filter(|e| e.interaction_id == interaction_id)
            .collect())
    }

    /// Waits (bounded) until an audit event matching `pred` is committed; for events written
    /// without a request to wait on them (refused handshakes).
    pub async fn await_audit(&self, pred: impl Fn(&AuditRecord) -> bool) -> Res<AuditRecord> {
        for _ in 0..200 {
            if let Some(e) = self.audit().await?.into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("no matching audit event within 5 s".into())
    }

    /// Runs one statement on the app's database, whichever backend it is.
    pub async fn sql(&self, statement: &'static str) -> TestResult {
        let url = &self.settings.database.url;
        if url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(url).await?;
            sqlx::query(statement).execute(&pool).await?;
        } else {
            let pool = sqlx::SqlitePool::connect(url).await?;
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(())
    }

    /// Runs the real `obgate` binary against this app's data.
    pub fn cli(&self, args: &[&str]) -> Res<std::process::Output> {
        Ok(std::process::Command::new(env!("CARGO_BIN_EXE_obgate"))
            .arg("--config")
            .arg(&self.config_file)
            .arg("--data-dir")
            .arg(self.path("data"))
            .args(args)
            .output()?)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(name) = self.database.take() {
            drop_database(name);
        }
    }
}

/// The PostgreSQL server the suite runs against, when `TEST_DATABASE_URL` is set (CI sets it);
/// without it the suite runs on SQLite files. Each test gets its own database, dropped after.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// `postgres://…/NAME` with the database part replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base
        .rsplit_once('/')
        .filter(|(s, _)| s.len() > "postgres://".len())
        .map_or(base, |(s, _)| s);
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

pub async fn create_database(url: &str) -> Res<(String, String)> {
    use sqlx::Connection;
    let mut b = [0u8; 6];
    openssl::rand::rand_bytes(&mut b)?;
    let name = format!(
        "obgate_t_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("PostgreSQL at TEST_DATABASE_URL is unreachable: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    Ok((with_database(url, &name), name))
}

fn drop_database(name: String) {
    let Some(url) = postgres_url() else { return };
    // Drop runs outside any runtime: a short-lived one of its own does the drop.
    let _ = std::thread::spawn(move || {
        use sqlx::Connection;
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
        });
    })
    .join();
}

pub async fn spawn_app() -> Res<TestApp> {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> Res<TestApp> {
    let dir = tempfile::tempdir()?;
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let data = dir.path().join("data");
    let t = now();

    let ca = issue(&CertSpec::ca("test CA", t), None)?;
    ca.write(&pki_dir, "ca")?;
    // Not configured unless a test sets tls.crl to it; revocation tests rewrite it and reload.
    write_crl(&ca, &pki_dir.join("crl.pem"), &[])?;
    write(&issue(&CertSpec::server(t), Some(&ca))?, &pki_dir, "server")?;
    let tpp_a = write(
        &issue(
            &CertSpec::tpp("Alpha Ltd", "0015800001ALPHA", "tpp-a", t),
            Some(&ca),
        )?,
        &pki_dir,
        "tpp-a",
    )?;
    let tpp_b = write(
        &issue(
            &CertSpec::tpp("Beta Ltd", "0015800001BETA", "tpp-b", t),
            Some(&ca),
        )?,
        &pki_dir,
        "tpp-b",
    )?;
    let aisp_only = write(
        &issue(
            &CertSpec::tpp("Gamma Ltd", "0015800001GAMMA", "tpp-aisp", t),
            Some(&ca),
        )?,
        &pki_dir,
        "tpp-aisp",
    )?;
    let mut self_spec = CertSpec::tpp("Delta Ltd", "0015800001DELTA", "tpp-self", t);
    self_spec.usage = Usage::Client;
    let self_signed = write(&issue(&self_spec, None)?, &pki_dir, "tpp-self")?;

    let mut settings = Settings::defaults(&data);
    settings.server.listen = "127.0.0.1:0".parse()?;
    settings.server.public_listen = "127.0.0.1:0".parse()?;
    settings.server.ops_listen = "127.0.0.1:0".parse()?;
    settings.server.workers = 1;
    settings.tls.cert = pki_dir.join("server.pem");
    settings.tls.key = pki_dir.join("server.key");
    settings.tls.client_ca = vec![pki_dir.join("ca.pem")];
    settings.tls.operator_ca = vec![pki_dir.join("ca.pem")];
    settings.policy.dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    if let Some(redis) = redis_url() {
        settings.state.url = redis_with_prefix(&redis);
    }
    let mut database = None;
    if let Some(pg) = postgres_url() {
        let (url, name) = create_database(&pg).await?;
        settings.database.url = url;
        database = Some(name);
    }
    customise(&mut settings);

    let store = Store::connect(&settings.database.url).await?;
    let register = |c: &CertFiles, cn: &str, name: &str, roles: &str, auth: AuthMethod| {
        obgate::cli::new_client(
            &settings,
            &c.cert,
            name,
            roles,
            auth,
            &[redirect_uri(cn)],
            None,
        )
    };
    let stamp = "2026-01-01T00:00:00+00:00";
    for (c, cn, name, roles, auth) in [
        (
            &tpp_a,
            "tpp-a",
            "Alpha Money",
            "AISP,PISP,CBPII",
            AuthMethod::TlsClientAuth,
        ),
        (
            &tpp_b,
            "tpp-b",
            "Beta Budget",
            "AISP,PISP,CBPII",
            AuthMethod::TlsClientAuth,
        ),
        (
            &aisp_only,
            "tpp-aisp",
            "Gamma Insights",
            "AISP",
            AuthMethod::TlsClientAuth,
        ),
        (
            &self_signed,
            "tpp-self",
            "Delta Apps",
            "AISP",
            AuthMethod::SelfSignedTlsClientAuth,
        ),
    ] {
        store
            .insert_client(&register(c, cn, name, roles, auth)?, stamp)
            .await?;
    }
    let customers = obgate::resources::sandbox::seed(&store, obgate::clock::now())
        .await?
        .ok_or("the sandbox bank was already seeded")?;

    let clock = obgate::clock::Clock::system();
    let app = Application::build_with_clock(settings.clone(), clock.clone()).await?;
    let (mtls, public, ops) = (app.mtls_addr(), app.public_addr(), app.ops_addr());
    let handle = app.handle();
    let reloader = app.reloader();
    tokio::spawn(app.run_until_stopped());

    // Pin the bound ports into the config the CLI reads, so `obgate tpp token` finds us.
    let mut on_disk = settings.clone();
    on_disk.server.mtls_url = format!("https://localhost:{}", mtls.port());
    let config_file = dir.path().join("obgate.toml");
    std::fs::write(&config_file, toml::to_string(&on_disk)?)?;

    let test_app = TestApp {
        mtls: format!("https://localhost:{}", mtls.port()),
        public: format!("https://localhost:{}", public.port()),
        ops: format!("http://{ops}"),
        ca: pki_dir.join("ca.pem"),
        dir,
        settings,
        config_file,
        tpp_a,
        tpp_b,
        aisp_only,
        self_signed,
        store,
        reloader,
        clock,
        customers,
        database,
        handle,
    };
    let health = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = health.get(format!("{}/healthz", test_app.ops)).send().await
            && r.status() == 200
        {
            let ready = health
                .get(format!("{}/readyz", test_app.ops))
                .send()
                .await?;
            if ready.status() != 200 {
                return Err(format!(
                    "the gateway is up but not ready (is {} reachable?): {}",
                    redis_url().unwrap_or_else(|| test_app.settings.state.url.clone()),
                    ready.text().await?
                )
                .into());
            }
            return Ok(test_app);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("server did not become healthy".into())
}

/// Another gateway process's worth of server on the same settings (same database, keys and
/// shared state), on its own ports: what a second instance behind a load balancer is.
pub struct Instance {
    pub mtls: String,
    pub public: String,
    pub ops: String,
    handle: actix_server::ServerHandle,
}

impl Drop for Instance {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    pub async fn another_instance(&self) -> Res<Instance> {
        let app = Application::build_with_clock(self.settings.clone(), self.clock.clone()).await?;
        let (mtls, public, ops) = (app.mtls_addr(), app.public_addr(), app.ops_addr());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        let instance = Instance {
            mtls: format!("https://localhost:{}", mtls.port()),
            public: format!("https://localhost:{}", public.port()),
            ops: format!("http://{ops}"),
            handle,
        };
        let health = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = health.get(format!("{}/readyz", instance.ops)).send().await
                && r.status() == 200
            {
                return Ok(instance);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("the second instance did not become ready".into())
    }
}

/// The Redis the suite runs against, when `TEST_REDIS_URL` is set (CI sets it); without
/// it the suite runs on in-process state.
pub fn redis_url() -> Option<String> {
    std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A Redis URL whose keys no other test (or earlier run) shares.
pub fn redis_with_prefix(url: &str) -> String {
    let mut b = [0u8; 8];
    let _ = openssl::rand::rand_bytes(&mut b);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}key_prefix=obgate-test-{}:",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// An app that also trusts a second CA, for TPPs only (not an operator anchor); returns that CA.
pub async fn spawn_app_with_partner_ca() -> Res<(TestApp, Issued)> {
    spawn_app_with_second_ca("partner CA").await
}

/// An app that also trusts a second CA named `name` (the test CA is `test CA`), for TPPs only.
pub async fn spawn_app_with_second_ca(name: &str) -> Res<(TestApp, Issued)> {
    let partner_ca = issue(&CertSpec::ca(name, now()), None)?;
    let pem = partner_ca.cert_pem()?;
    let app = spawn_app_with(move |s| {
        let path = s.tls.client_ca[0].with_file_name("partner-ca.pem");
        // Should the write fail, the server refuses to start and names the missing file.
        let _ = std::fs::write(&path, &pem);
        s.tls.client_ca.push(path);
    })
    .await?;
    Ok((app, partner_ca))
}

/// Settings customisation that runs the app on a copy of the shipped policy, edited.
pub fn with_policy(edit: impl Fn(String) -> String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/access.toml");
        let dir = s.tls.client_ca[0].with_file_name("policies");
        // Should either fail, the server refuses to start and names the missing file.
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::read_to_string(shipped)
            .map(|t| std::fs::write(dir.join("access.toml"), edit(t)));
        s.policy.dir = dir;
    }
}

/// Decodes a JWT's payload without verifying it (tests only).
pub fn claims_of(token: &str) -> Res<Value> {
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?)
}

pub fn header_of(token: &str) -> Res<Value> {
    let header = token.split('.').next().ok_or("not a JWT")?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?)
}

pub const CONSENTS: &str = "/open-banking/v3.1/aisp/account-access-consents";
pub const PAYMENT_CONSENTS: &str = "/open-banking/v3.1/pisp/domestic-payment-consents";
pub const FUNDS_CONSENTS: &str = "/open-banking/v3.1/cbpii/funds-confirmation-consents";
pub const AAC_BODY: &str =
    r#"{"Data":{"Permissions":["ReadAccountsBasic","ReadBalances"]},"Risk":{}}"#;

pub fn payment_body(amount: &str) -> String {
    format!(
        r#"{{"Data":{{"Initiation":{{"InstructionIdentification":"ACME412","EndToEndIdentification":"FRESCO.21302.GFX.20","InstructedAmount":{{"Amount":"{amount}","Currency":"GBP"}},"CreditorAccount":{{"SchemeName":"UK.OBIE.SortCodeAccountNumber","Identification":"08080021325698","Name":"ACME Inc"}},"RemittanceInformation":{{"Reference":"FRESCO-101"}}}}}},"Risk":{{"PaymentContextCode":"EcommerceGoods"}}}}"#
    )
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// Writes a PEM CRL signed by `ca` that revokes `revoked` (possibly none).
pub fn write_crl(ca: &Issued, path: &Path, revoked: &[&CertFiles]) -> TestResult {
    use openssl::asn1::{Asn1Object, Asn1OctetString, Asn1Time};
    use openssl::x509::{X509CrlBuilder, X509Extension, X509Revoked};
    let mut b = X509CrlBuilder::new()?;
    b.set_issuer_name(ca.cert.subject_name())?;
    let (last, next) = (
        Asn1Time::from_unix(now() - 60)?,
        Asn1Time::from_unix(now() + DAY)?,
    );
    b.set_last_update(&last)?;
    b.set_next_update(&next)?;
    let key_id = ca
        .cert
        .subject_key_id()
        .ok_or("CA has no SKI")?
        .as_slice()
        .to_vec();
    let extensions = [
        ("2.5.29.35", der(0x30, &der(0x80, &key_id))), // authorityKeyIdentifier
        ("2.5.29.20", der(0x02, &[1])),                // cRLNumber
    ];
    for (oid, value) in extensions {
        let oid = Asn1Object::from_str(oid)?;
        let value = Asn1OctetString::new_from_bytes(&value)?;
        b.append_extension(X509Extension::new_from_der(&oid, false, &value)?)?;
    }
    let when = obgate::clock::now();
    let utc = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        when.year() % 100,
        u8::from(when.month()),
        when.day(),
        when.hour(),
        when.minute(),
        when.second()
    );
    for c in revoked {
        let x = openssl::x509::X509::from_pem(&std::fs::read(&c.cert)?)?;
        let mut serial = x.serial_number().to_bn()?.to_vec();
        if serial.first().is_some_and(|b| b & 0x80 != 0) {
            serial.insert(0, 0);
        }
        let entry = der(
            0x30,
            &[der(0x02, &serial), der(0x17, utc.as_bytes())].concat(),
        );
        b.add_revoked(X509Revoked::from_der(&entry)?)?;
    }
    b.sign(&ca.key, MessageDigest::sha256())?;
    std::fs::write(path, b.build()?.to_pem()?)?;
    Ok(())
}
