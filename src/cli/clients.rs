//! `obgate clients`: the TPP registry from the server host.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};

use crate::clock;
use crate::config::Settings;
use crate::pki::{self};
use crate::registry::{
    AuthMethod, Client, ClientId, ClientStatus, Lifecycle, MAX_ACTIVE_CERTS, Role,
};
use crate::store::{CertAdded, CertRevoked, Migrations, NewClient, Store};

use super::pki::read_cert;
use super::{Cli, ClientsCommand, settings};

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
    let subject = crate::tls::peer::registration_record(&cert)
        .ok_or_else(|| anyhow!("{}: the certificate cannot be read", cert_path.display()))?
        .subject;
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
    let mut client = Client {
        client_id,
        name: name.to_string(),
        status: ClientStatus::Active,
        roles,
        auth_method: auth,
        subject_dn: (auth == AuthMethod::TlsClientAuth).then_some(subject),
        cert_thumbprints: Vec::new(),
        cert_issuers: Vec::new(),
        cert_issuer_keys: Vec::new(),
        redirect_uris: redirect_uris.to_vec(),
        jwks: None,
        created_at: clock::ob_datetime(clock::now()),
    };
    let record = crate::oauth::clients::admissible_certificate(
        &client,
        &cert,
        &settings.tls,
        clock::now().unix_timestamp(),
    )
    .map_err(|why| {
        anyhow!(
            "{}: not usable for {}: {why}",
            cert_path.display(),
            auth.as_str()
        )
    })?;
    client.cert_thumbprints = vec![record.thumbprint.clone()];
    client.cert_issuer_keys = record.issuer_key.iter().cloned().collect();
    Ok(NewClient {
        client,
        cert: record,
    })
}

pub(super) async fn clients_command(cli: &Cli, cmd: &ClientsCommand) -> anyhow::Result<ExitCode> {
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
        ClientsCommand::Suspend { id }
        | ClientsCommand::Activate { id }
        | ClientsCommand::Delete { id } => {
            let id = parse_id(id)?;
            let step = match cmd {
                ClientsCommand::Suspend { .. } => Lifecycle::Suspend,
                ClientsCommand::Activate { .. } => Lifecycle::Activate,
                _ => Lifecycle::Delete,
            };
            let client = store
                .client(&id)
                .await?
                .ok_or_else(|| anyhow!("no client {id}"))?;
            if !store
                .transition_client(&id, step.from(), step.to(), &stamp)
                .await?
            {
                bail!(
                    "client {id} is {}; it cannot become {} from there",
                    client.status.as_str(),
                    step.to().as_str()
                );
            }
            println!("{id} {}", step.to().as_str());
        }
        ClientsCommand::Certs { id, json } => {
            let id = parse_id(id)?;
            if store.client(&id).await?.is_none() {
                bail!("no client {id}");
            }
            let certs = store.client_certificates_of(&id).await?;
            if *json {
                let list: Vec<_> = certs
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "thumbprint": c.record.thumbprint,
                            "status": c.status.as_str(),
                            "subject": c.record.subject,
                            "issuer": c.record.issuer,
                            "serial": c.record.serial,
                            "not_after": c.record.not_after,
                            "added_at": c.added_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for c in certs {
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.record.thumbprint,
                        c.status.as_str(),
                        clock::timestamp(
                            time::OffsetDateTime::from_unix_timestamp(c.record.not_after)
                                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                        ),
                        c.record.subject
                    );
                }
            }
        }
        ClientsCommand::AddCert { id, cert } => {
            let id = parse_id(id)?;
            let client = store
                .client(&id)
                .await?
                .ok_or_else(|| anyhow!("no client {id}"))?;
            let x509 = read_cert(cert)?;
            let record = crate::oauth::clients::admissible_certificate(
                &client,
                &x509,
                &s.tls,
                clock::now().unix_timestamp(),
            )
            .map_err(|why| anyhow!("{}: {why}", cert.display()))?;
            match store.add_client_certificate(&id, &record, &stamp).await? {
                CertAdded::Added => println!("{}", record.thumbprint),
                CertAdded::NoSuchClient => bail!("no client {id}"),
                CertAdded::SetFull => bail!(
                    "client {id} already has {MAX_ACTIVE_CERTS} active certificates; revoke one \
                     first (obgate clients revoke-cert {id} THUMBPRINT)"
                ),
            }
        }
        ClientsCommand::RevokeCert { id, thumbprint } => {
            let id = parse_id(id)?;
            match store.revoke_client_certificate(&id, thumbprint).await? {
                CertRevoked::Now(r) => println!("{} revoked", r.thumbprint),
                CertRevoked::Already(r) => println!("{} was revoked already", r.thumbprint),
                CertRevoked::NotFound => {
                    bail!(
                        "client {id} has no certificate {thumbprint} (see obgate clients certs {id})"
                    )
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
