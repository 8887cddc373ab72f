//! The `obgate` command line. Every subcommand reads the same settings as `serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::audit::export::Format;
use crate::config::Settings;
use crate::pki::KeyType;
use crate::policy::{Policy, PolicyError};
use crate::registry::AuthMethod;
use crate::store::{Migrations, Store};

mod audit;
mod clients;
mod pki;
mod serve;
mod tpp;

pub use clients::new_client;

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
    /// Let a suspended client, or a pending registration, in.
    Activate {
        /// The client id.
        id: String,
    },
    /// Delete a client: every call and token of it is refused from then on; it is kept so the
    /// audit log still attributes its events.
    Delete {
        /// The client id.
        id: String,
    },
    /// List a client's certificates, revoked ones included.
    Certs {
        /// The client id.
        id: String,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a certificate to a client's set (at most 5 active): how a TPP rotates.
    AddCert {
        /// The client id.
        id: String,
        /// PEM certificate; it must authenticate the client as registered.
        #[arg(long)]
        cert: PathBuf,
    },
    /// Revoke a certificate of a client's set: running gateways refuse it, and every token
    /// bound to it, within a second.
    RevokeCert {
        /// The client id.
        id: String,
        /// The certificate's thumbprint (base64url SHA-256, as `clients certs` shows it).
        thumbprint: String,
    },
}

/// How a TPP command reaches the mTLS listener.
#[derive(Debug, clap::Args)]
pub struct TppTls {
    /// The TPP's client certificate (PEM), presented at the mTLS handshake.
    #[arg(long)]
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// CA that issued the gateway's server certificate (default: the dev CA).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TppCommand {
    /// Fetch a client-credentials access token with a client certificate (via the oauth2 crate).
    Token {
        #[command(flatten)]
        tls: TppTls,
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
        #[command(flatten)]
        tls: TppTls,
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
        Command::Serve => serve::serve(&cli).await,
        Command::Pki(cmd) => pki::pki_command(&cli, cmd),
        Command::Clients(cmd) => clients::clients_command(&cli, cmd).await,
        Command::Tpp(cmd) => tpp::tpp_command(&cli, cmd).await,
        Command::Audit(cmd) => audit::audit_command(&cli, cmd).await,
        Command::Policy(PolicyCommand::Check { dir }) => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => settings(&cli)?.policy.dir,
            };
            match Policy::load(&dir, &crate::ops::openapi::protected_routes()) {
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
            match serve::seed_sandbox(&cli, &store).await? {
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
        let pki = crate::pki::PkiError::Io {
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
