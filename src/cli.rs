//! The `obgate` command line. Every subcommand reads the same settings as `serve`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use openssl::x509::X509;

use crate::audit::export::{self, Format};
use crate::audit::{self, Verdict};
use crate::clock;
use crate::config::Settings;
use crate::pki::{self, CertSpec, DevPki, KeyType, OPERATOR_ORG, OPERATOR_ROLES};
use crate::policy::{Policy, PolicyError};
use crate::registry::{AuthMethod, Client, ClientId, ClientStatus, Role};
use crate::resources::sandbox;
use crate::routes::PROTECTED_ROUTES;
use crate::startup::Application;
use crate::store::{Migrations, NewClient, Store};

#[derive(Debug, Parser)]
#[command(name = "obgate", version, about = "Open Banking partner API gateway")]
pub struct Cli {
    /// TOML config file; without one, obgate runs on its embedded default.
    #[arg(long, global = true, env = "OBGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database, dev PKI, signing keys).
    #[arg(
        long,
        global = true,
        env = "OBGATE_DATA_DIR",
        default_value = "obgate-data"
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Development PKI.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// The client (TPP) registry.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// What a TPP developer does first.
    #[command(subcommand)]
    Tpp(TppCommand),
    /// The access log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The access policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print the OpenAPI document (the bytes of openapi/obgate.json).
    Openapi,
    /// Create or upgrade the database schema.
    Migrate,
    /// Seed the sandbox bank (customers, accounts, transactions) into an empty database, as
    /// the embedded default does on first start; passwords go to <data-dir>/sandbox-customers.txt.
    SandboxSeed,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create the dev CA, server certificate, demo TPP and operator certificates (missing ones only).
    Init,
    /// Issue a TPP or operator certificate signed by the dev CA: DIR/NAME.pem and DIR/NAME.key.
    Issue {
        #[arg(long, value_enum)]
        kind: CertKind,
        /// The certificate's name; for a TPP, its software id (CN).
        #[arg(long)]
        name: String,
        /// Operator roles, comma-separated (portal, auditor).
        #[arg(long)]
        roles: Option<String>,
        /// TPP organisation name (O); defaults to NAME.
        #[arg(long)]
        org: Option<String>,
        /// TPP organisation id (OU).
        #[arg(long, default_value = "0015800001OBGATEDEV")]
        org_id: String,
        #[arg(long, value_enum, default_value_t = KeyType::EcP256)]
        key_type: KeyType,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CertKind {
    Tpp,
    Operator,
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a TPP with the certificate it will authenticate with; prints the client id.
    Register {
        /// The client's display name, shown to customers on the consent page.
        #[arg(long)]
        name: String,
        /// PEM certificate of the client.
        #[arg(long)]
        cert: PathBuf,
        /// Comma-separated: AISP, PISP, CBPII.
        #[arg(long)]
        roles: String,
        /// How the client authenticates: a certificate from a trusted CA matched on subject DN
        /// and issuer (tls_client_auth), or one self-signed certificate matched on its
        /// thumbprint (self_signed_tls_client_auth).
        #[arg(long, value_enum, default_value_t = AuthMethod::TlsClientAuth)]
        auth: AuthMethod,
        /// A redirect URI for the consent flow (https, exact match); repeat for several.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Client id; defaults to the certificate's CN (the software id).
        #[arg(long)]
        client_id: Option<String>,
        /// JWK Set file with the client's public signing keys (for signed request objects).
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Print {"client_id": …} instead of the bare id.
        #[arg(long)]
        json: bool,
    },
    /// List registered clients.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Show {
        /// The client id.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Suspend a client: its token requests and its tokens are refused until it is activated.
    Suspend {
        /// The client id.
        id: String,
    },
    /// Re-activate a suspended client.
    Activate {
        /// The client id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TppCommand {
    /// Fetch a client-credentials access token with a client certificate (via the oauth2 crate).
    Token {
        /// The TPP's client certificate (PEM), presented at the mTLS handshake.
        #[arg(long)]
        cert: PathBuf,
        /// The certificate's private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// CA that issued the gateway's server certificate (default: the dev CA).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Space-separated scopes to ask for; the gateway grants nothing unasked.
        #[arg(long, default_value = "accounts")]
        scope: String,
        /// mTLS base URL (default: server.mtls_url).
        #[arg(long)]
        url: Option<String>,
        /// Client id (default: the certificate's CN).
        #[arg(long)]
        client_id: Option<String>,
    },
    /// Walk a customer consent: create the consent (unless --consent-id), push the
    /// authorization request (PAR + PKCE), print the page to open, then exchange the code from
    /// the URL the browser lands on for certificate-bound tokens (via the oauth2 crate).
    ConsentFlow {
        /// The TPP's client certificate (PEM), presented at the mTLS handshake.
        #[arg(long)]
        cert: PathBuf,
        /// The certificate's private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// CA that issued the gateway's server certificate (default: the dev CA).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// accounts, payments or fundsconfirmations.
        #[arg(long)]
        scope: String,
        /// An existing consent awaiting authorisation; otherwise one is created.
        #[arg(long)]
        consent_id: Option<String>,
        /// Payment amount in GBP when creating a payment consent.
        #[arg(long, default_value = "10.00")]
        amount: String,
        /// Sort code + account number to check, when creating a funds-confirmation consent.
        #[arg(long)]
        debtor_account: Option<String>,
        /// A redirect URI registered for the client.
        #[arg(long, default_value = "https://localhost/callback")]
        redirect_uri: String,
        /// Client id (default: the certificate's CN).
        #[arg(long)]
        client_id: Option<String>,
        /// mTLS base URL (default: server.mtls_url).
        #[arg(long)]
        url: Option<String>,
        /// The issuer, base of /authorize (default: server.public_url).
        #[arg(long)]
        issuer: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 at the first broken link.
    Verify,
    /// Print events, oldest first.
    Export {
        /// Start (inclusive), RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive), RFC 3339.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate the policy; print file, line and field for each mistake.
    Check { dir: Option<PathBuf> },
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    Ok(Settings::load(
        cli.config.as_deref(),
        &cli.data_dir,
        std::env::vars(),
    )?)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => serve(&cli).await,
        Command::Pki(cmd) => pki_command(&cli, cmd),
        Command::Clients(cmd) => clients_command(&cli, cmd).await,
        Command::Tpp(TppCommand::Token {
            cert,
            key,
            ca,
            scope,
            url,
            client_id,
        }) => {
            let s = settings(&cli)?;
            let ca = ca
                .clone()
                .unwrap_or_else(|| DevPki::new(&cli.data_dir).path("ca.pem"));
            let url = url.clone().unwrap_or(s.server.mtls_url);
            let body = crate::tpp::client_credentials_token(
                cert,
                key,
                &ca,
                &url,
                client_id.as_deref(),
                Some(scope),
            )
            .await?;
            println!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tpp(TppCommand::ConsentFlow {
            cert,
            key,
            ca,
            scope,
            consent_id,
            amount,
            debtor_account,
            redirect_uri,
            client_id,
            url,
            issuer,
        }) => {
            let s = settings(&cli)?;
            let ca = ca
                .clone()
                .unwrap_or_else(|| DevPki::new(&cli.data_dir).path("ca.pem"));
            let mtls = url.clone().unwrap_or(s.server.mtls_url);
            let issuer = issuer.clone().unwrap_or(s.server.public_url);
            let client_id = match client_id {
                Some(id) => id.clone(),
                None => crate::tpp::client_id_of(cert)?,
            };
            let http = crate::tpp::mtls_client(cert, key, &ca)?;
            let consent_id = match consent_id {
                Some(id) => id.clone(),
                None => {
                    let token: serde_json::Value = serde_json::from_str(
                        &crate::tpp::client_credentials_token(
                            cert,
                            key,
                            &ca,
                            &mtls,
                            Some(&client_id),
                            Some(scope),
                        )
                        .await?,
                    )?;
                    let access = token["access_token"].as_str().unwrap_or_default();
                    let id = crate::tpp::create_consent(
                        &http,
                        &mtls,
                        access,
                        scope,
                        amount,
                        debtor_account.as_deref(),
                    )
                    .await?;
                    eprintln!("created consent {id}");
                    id
                }
            };
            let flow = crate::tpp::start_consent_flow(
                &http,
                &mtls,
                &issuer,
                &format!("{issuer}/authorize"),
                &client_id,
                redirect_uri,
                &format!("openid {scope}"),
                &consent_id,
            )
            .await?;
            eprintln!(
                "\nOpen this in a browser and sign in as a sandbox customer:\n\n  {}\n",
                flow.authorize_url
            );
            eprintln!("Then paste the address the browser was sent to ({redirect_uri}?code=...):");
            let mut callback = String::new();
            std::io::stdin()
                .read_line(&mut callback)
                .context("reading the callback URL from stdin")?;
            let tokens = crate::tpp::finish_consent_flow(&http, flow, callback.trim()).await?;
            println!("{}", serde_json::to_string_pretty(&tokens)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(cmd) => audit_command(&cli, cmd).await,
        Command::Policy(PolicyCommand::Check { dir }) => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => settings(&cli)?.policy.dir,
            };
            match Policy::load(&dir, PROTECTED_ROUTES) {
                Ok(_) => {
                    println!("{}: ok", dir.join(crate::policy::POLICY_FILE).display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(PolicyError::Invalid(issues)) => {
                    for issue in &issues {
                        eprintln!("{issue}");
                    }
                    eprintln!("{} mistake(s) in the policy", issues.len());
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::SandboxSeed => {
            let s = settings(&cli)?;
            let store = Store::connect_with(&s.database.url, Migrations::RequireCurrent).await?;
            match seed_sandbox(&cli, &store).await? {
                Some(path) => println!("seeded the sandbox bank; passwords in {}", path.display()),
                None => println!("the sandbox bank is already seeded; nothing changed"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", crate::ops::openapi::document());
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let s = settings(&cli)?;
            Store::connect(&s.database.url).await?;
            println!("database is up to date");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn pki_command(cli: &Cli, cmd: &PkiCommand) -> anyhow::Result<ExitCode> {
    let now = clock::now().unix_timestamp();
    match cmd {
        PkiCommand::Init => {
            let dev = DevPki::new(&cli.data_dir);
            let created = dev.init(now)?;
            if created.is_empty() {
                println!(
                    "dev PKI in {} is complete; nothing created",
                    dev.dir.display()
                );
            } else {
                println!("created in {}: {}", dev.dir.display(), created.join(", "));
            }
        }
        PkiCommand::Issue {
            kind,
            name,
            roles,
            org,
            org_id,
            key_type,
            out,
        } => {
            let mut spec = match kind {
                CertKind::Tpp => {
                    if roles.is_some() {
                        bail!(
                            "--roles is for operator certificates; a TPP's roles are set by \
                             `obgate clients register --roles`"
                        );
                    }
                    let org = org.as_deref().unwrap_or(name);
                    if org == OPERATOR_ORG {
                        bail!("--org {OPERATOR_ORG:?} is reserved for operator certificates");
                    }
                    CertSpec::tpp(org, org_id, name, now)
                }
                CertKind::Operator => {
                    let roles: Vec<String> = roles
                        .as_deref()
                        .unwrap_or("")
                        .split(',')
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect();
                    if roles.is_empty() {
                        bail!("--roles is required for an operator certificate (portal, auditor)");
                    }
                    if let Some(bad) = roles.iter().find(|r| !OPERATOR_ROLES.contains(&r.as_str()))
                    {
                        bail!("--roles: unknown operator role {bad:?} (expected portal, auditor)");
                    }
                    CertSpec::operator(name, &roles, now)
                }
            };
            spec.key_type = *key_type;
            let ca = DevPki::new(&cli.data_dir)
                .ca()
                .context("the dev CA is missing; run `obgate pki init` first")?;
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let (cert, key) = pki::issue(&spec, Some(&ca))?.write(out, name)?;
            println!("{}\n{}", cert.display(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_cert(path: &Path) -> anyhow::Result<X509> {
    let pem = pki::read(path)?;
    X509::from_pem(&pem).map_err(|_| anyhow!("{}: not a PEM certificate", path.display()))
}

/// Builds a client record for `cert` and checks it can authenticate the way it registers.
pub fn new_client(
    settings: &Settings,
    cert_path: &Path,
    name: &str,
    roles: &str,
    auth: AuthMethod,
    redirect_uris: &[String],
    client_id: Option<&str>,
) -> anyhow::Result<NewClient> {
    let cert = read_cert(cert_path)?;
    let record = crate::tls::peer::registration_record(&cert)
        .ok_or_else(|| anyhow!("{}: the certificate cannot be read", cert_path.display()))?;
    if record.not_after <= clock::now().unix_timestamp() {
        bail!("{}: the certificate has expired", cert_path.display());
    }
    let roles = Role::parse_list(roles).map_err(|e| anyhow!("--roles: {e}"))?;
    let id = match client_id {
        Some(id) => id.to_string(),
        None => pki::common_name(&cert).ok_or_else(|| {
            anyhow!(
                "{}: no CN to use as client id; pass --client-id",
                cert_path.display()
            )
        })?,
    };
    let client_id: ClientId = id.parse().map_err(|e| anyhow!("client id: {e}"))?;
    for uri in redirect_uris {
        if !uri.starts_with("https://") || uri.contains('#') {
            bail!("--redirect-uri {uri:?}: must be an https:// URI without a fragment");
        }
    }
    let subject_dn = match auth {
        AuthMethod::TlsClientAuth => {
            crate::tls::verify_with_trust_anchors(&settings.tls, &cert).map_err(|e| {
                anyhow!(
                    "{}: not usable for tls_client_auth: {e} (issued by a CA in tls.client_ca?)",
                    cert_path.display()
                )
            })?;
            Some(record.subject.clone())
        }
        AuthMethod::SelfSignedTlsClientAuth => {
            let self_signed = cert.issuer_name_hash() == cert.subject_name_hash()
                && cert
                    .public_key()
                    .and_then(|k| cert.verify(&k))
                    .unwrap_or(false);
            if !self_signed {
                bail!(
                    "{}: self_signed_tls_client_auth needs a self-signed certificate",
                    cert_path.display()
                );
            }
            None
        }
    };
    Ok(NewClient {
        client: Client {
            client_id,
            name: name.to_string(),
            status: ClientStatus::Active,
            roles,
            auth_method: auth,
            subject_dn,
            cert_thumbprints: vec![record.thumbprint.clone()],
            cert_issuers: vec![record.issuer.clone()],
            redirect_uris: redirect_uris.to_vec(),
            jwks: None,
            created_at: clock::ob_datetime(clock::now()),
        },
        cert: record,
    })
}

async fn clients_command(cli: &Cli, cmd: &ClientsCommand) -> anyhow::Result<ExitCode> {
    let s = settings(cli)?;
    let store = Store::connect_with(&s.database.url, Migrations::RequireCurrent).await?;
    let stamp = clock::ob_datetime(clock::now());
    let parse_id =
        |id: &str| -> anyhow::Result<ClientId> { id.parse().map_err(|e| anyhow!("{e}")) };
    match cmd {
        ClientsCommand::Register {
            name,
            cert,
            roles,
            auth,
            redirect_uris,
            client_id,
            jwks,
            json,
        } => {
            let mut new = new_client(
                &s,
                cert,
                name,
                roles,
                *auth,
                redirect_uris,
                client_id.as_deref(),
            )?;
            if let Some(path) = jwks {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                crate::oauth::request_object::parse_client_jwks(&text)
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                new.client.jwks = Some(text);
            }
            store.insert_client(&new, &stamp).await?;
            if *json {
                println!("{}", serde_json::json!({"client_id": new.client.client_id}));
            } else {
                println!("{}", new.client.client_id);
            }
        }
        ClientsCommand::List { json } => {
            let clients = store.clients().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&clients)?);
            } else {
                for c in clients {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        c.client_id,
                        c.status.as_str(),
                        Role::join(&c.roles),
                        c.auth_method.as_str(),
                        c.name
                    );
                }
            }
        }
        ClientsCommand::Show { id, json } => {
            let id = parse_id(id)?;
            let c = store
                .client(&id)
                .await?
                .ok_or_else(|| anyhow!("no client {id}"))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("client_id:    {}", c.client_id);
                println!("name:         {}", c.name);
                println!("status:       {}", c.status.as_str());
                println!("roles:        {}", Role::join(&c.roles));
                println!("auth_method:  {}", c.auth_method.as_str());
                if let Some(dn) = &c.subject_dn {
                    println!("subject_dn:   {dn}");
                }
                println!("certificates: {}", c.cert_thumbprints.join(", "));
                println!("redirect_uris: {}", c.redirect_uris.join(", "));
                println!("created_at:   {}", c.created_at);
            }
        }
        ClientsCommand::Suspend { id } | ClientsCommand::Activate { id } => {
            let id = parse_id(id)?;
            let status = if matches!(cmd, ClientsCommand::Suspend { .. }) {
                ClientStatus::Suspended
            } else {
                ClientStatus::Active
            };
            if !store.set_client_status(&id, status, &stamp).await? {
                bail!("no client {id}");
            }
            println!("{id} {}", status.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_command(cli: &Cli, cmd: &AuditCommand) -> anyhow::Result<ExitCode> {
    let s = settings(cli)?;
    let store = Store::connect_with(&s.database.url, Migrations::RequireCurrent).await?;
    match cmd {
        AuditCommand::Verify => match audit::verify(&store).await? {
            Verdict::Intact { last_seq } => {
                println!("intact up to seq {last_seq}");
                Ok(ExitCode::SUCCESS)
            }
            Verdict::Broken { seq, reason } => {
                println!("broken at seq {seq}: {reason}");
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::Export { from, to, format } => {
            let bound = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<String>> {
                v.as_deref()
                    .map(|t| {
                        clock::parse(t).map(clock::timestamp).ok_or_else(|| {
                            anyhow!("{flag} {t:?}: expected an RFC 3339 time such as 2026-11-23T00:00:00Z")
                        })
                    })
                    .transpose()
            };
            let (from, to) = (bound("--from", from)?, bound("--to", to)?);
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            export::export(&store, from, to, *format, &mut out).await?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The embedded default's first start: dev PKI, database, the demo TPP.
async fn prepare_embedded(cli: &Cli, s: &Settings) -> anyhow::Result<()> {
    let dev = DevPki::new(&cli.data_dir);
    if s.tls.cert != dev.path("server.pem") {
        return Ok(());
    }
    let created = dev.init(clock::now().unix_timestamp())?;
    if !created.is_empty() {
        tracing::info!(dir = %dev.dir.display(), files = ?created, "created dev PKI");
    }
    let store = Store::connect_with(&s.database.url, Migrations::RequireCurrent).await?;
    let demo: ClientId = "demo-tpp".parse().map_err(|e: String| anyhow!(e))?;
    if store.client(&demo).await?.is_none() {
        let new = new_client(
            s,
            &dev.path("demo-tpp.pem"),
            "Demo TPP",
            "AISP,PISP,CBPII",
            AuthMethod::TlsClientAuth,
            &["https://localhost/callback".to_string()],
            Some("demo-tpp"),
        )?;
        store
            .insert_client(&new, &clock::ob_datetime(clock::now()))
            .await?;
    }
    if let Some(path) = seed_sandbox(cli, &store).await? {
        tracing::info!(file = %path.display(), "seeded the sandbox bank");
    }
    Ok(())
}

/// Seeds the sandbox bank if it is empty and writes the customers' passwords; returns where.
async fn seed_sandbox(cli: &Cli, store: &Store) -> anyhow::Result<Option<PathBuf>> {
    let Some(credentials) = sandbox::seed(store, clock::now()).await? else {
        return Ok(None);
    };
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    let path = cli.data_dir.join(SANDBOX_CUSTOMERS);
    let text: String = credentials
        .iter()
        .map(|(user, password)| format!("{user} {password}\n"))
        .collect();
    write_private(&path, &text)?;
    Ok(Some(path))
}

/// Where the embedded default writes the sandbox customers' passwords.
const SANDBOX_CUSTOMERS: &str = "sandbox-customers.txt";

/// Writes a file only its owner can read (it holds passwords).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn serve(cli: &Cli) -> anyhow::Result<ExitCode> {
    let s = settings(cli)?;
    crate::startup::check_listeners(&s)?;
    prepare_embedded(cli, &s).await?;
    let banner = banner(cli, &s);
    let spool = s.database.audit_spool.clone();
    let app = Application::build(s).await?;
    let reloader = app.reloader();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload needs a restart");
            return;
        };
        while hup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(()) => tracing::info!("reloaded certificates, trust anchors, CRLs and policy"),
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; the previous configuration stays")
                }
            }
        }
    });
    // A closed stdout (`obgate serve | head`, a pipe its reader dropped) must not stop the
    // gateway: the banner is a courtesy.
    let _ = writeln!(std::io::stdout(), "{banner}");
    let audit = app.audit_log();
    // SIGTERM/SIGINT: the listeners stop accepting, in-flight requests finish (up to 5 s), then
    // whatever the audit writer still holds is written before the process exits.
    app.run_until_stopped().await?;
    // A flush writes the whole backlog if the database takes it; the deadline bounds that too.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut answered = None;
    while let Ok(backlog) = tokio::time::timeout_at(deadline, audit.flush()).await {
        answered = Some(backlog);
        if backlog.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let Some(backlog) = answered else {
        tracing::error!(
            "stopped while the audit writer was still at the database: events it had not yet \
             spooled are lost"
        );
        return Ok(ExitCode::FAILURE);
    };
    if backlog.unsaved > 0 {
        tracing::error!(
            events = backlog.unsaved,
            "stopped with audit events neither the database nor the spool would take"
        );
        return Ok(ExitCode::FAILURE);
    }
    if backlog.spooled {
        tracing::warn!(
            spool = %spool.display(),
            "stopped with audit events the database would not take, kept in the spool: any \
             instance using this spool writes them once the database is back"
        );
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!("stopped; the audit log is flushed");
    Ok(ExitCode::SUCCESS)
}

fn banner(cli: &Cli, s: &Settings) -> String {
    let data_dir = std::path::absolute(&cli.data_dir).unwrap_or(cli.data_dir.clone());
    let dev = DevPki::new(&data_dir);
    let customers_file = data_dir.join(SANDBOX_CUSTOMERS);
    let customers: String = std::fs::read_to_string(&customers_file)
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(u, p)| format!("  {u} {p}\n"))
                .collect()
        })
        .unwrap_or_else(|_| "  (none: this data dir was not seeded by obgate serve)\n".into());
    let mtls = &s.server.mtls_url;
    let file = |name: &str| shell_word(&dev.path(name).display().to_string());
    let (ca, cert, key) = (file("ca.pem"), file("demo-tpp.pem"), file("demo-tpp.key"));
    let tls = format!("--cacert {ca} --cert {cert} --key {key}");
    format!(
        r#"
obgate is running
  mTLS listener (TPPs)         {mtls}
  public listener (discovery)  {public}
  ops listener (keep private)  http://{ops}   /metrics /healthz /readyz /docs

As the demo TPP: get a token bound to your certificate, then create a consent with it.

  TOKEN=$(curl -s {tls} \
    -d grant_type=client_credentials -d client_id=demo-tpp -d scope=accounts \
    {mtls}/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  curl -s {tls} \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{{"Data":{{"Permissions":["ReadAccountsBasic","ReadBalances"]}},"Risk":{{}}}}' \
    {mtls}/open-banking/v3.1/aisp/account-access-consents

Sandbox bank customers, as "username password" (sign in at the consent page; also in
{customers_file}):
{customers}
Walk a customer through a consent (prints the page to open, then exchanges the code):

  {obgate}{data_dir_arg} tpp consent-flow \
    --ca {ca} --cert {cert} --key {key} \
    --client-id demo-tpp --scope accounts

Customers manage what they shared at {public}/connected-apps
"#,
        public = s.server.public_url,
        ops = s.server.ops_listen,
        customers_file = customers_file.display(),
        obgate = obgate_command(),
        data_dir_arg = command_args(cli, &data_dir),
    )
}

/// How to run this very binary from a shell: its absolute path (after `cargo run` it is not on
/// PATH).
fn obgate_command() -> String {
    std::env::current_exe()
        .map(|p| shell_word(&p.display().to_string()))
        .unwrap_or_else(|_| "obgate".into())
}

/// The `--config` and `--data-dir` a pasted command needs to find this gateway's files.
fn command_args(cli: &Cli, data_dir: &std::path::Path) -> String {
    let mut args = format!(
        " --data-dir {}",
        shell_word(&data_dir.display().to_string())
    );
    if let Some(config) = &cli.config {
        let config = std::path::absolute(config).unwrap_or(config.clone());
        args.push_str(&format!(
            " --config {}",
            shell_word(&config.display().to_string())
        ));
    }
    args
}

/// `s` quoted for a POSIX shell when it needs quoting.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The message for an error that ends a command: each cause once. Many errors repeat their
/// cause in their own text ("database: connection refused"), so a cause the message already
/// holds is left out.
pub fn report(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let pki = pki::PkiError::Io {
            path: PathBuf::from("/data/pki/demo-tpp.pem"),
            source: io,
        };
        let e = anyhow::Error::new(pki).context("registering demo-tpp");
        assert_eq!(
            report(&e),
            "registering demo-tpp: /data/pki/demo-tpp.pem: No such file"
        );
    }
}
