//! `obgate serve`: the embedded default prepared on first start, the banner, and the gateway
//! run until a signal stops it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};

use crate::clock;
use crate::config::Settings;
use crate::pki::DevPki;
use crate::registry::{AuthMethod, ClientId};
use crate::resources::sandbox;
use crate::startup::Application;
use crate::store::{Migrations, Store};

use super::clients::new_client;
use super::{Cli, settings};

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
pub(super) async fn seed_sandbox(cli: &Cli, store: &Store) -> anyhow::Result<Option<PathBuf>> {
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

pub(super) async fn serve(cli: &Cli) -> anyhow::Result<ExitCode> {
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
