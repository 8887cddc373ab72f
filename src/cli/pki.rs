//! `obgate pki`: the dev PKI.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use openssl::x509::X509;

use crate::clock;
use crate::pki::{self, CertSpec, DevPki, OPERATOR_ORG, OPERATOR_ROLES};

use super::{CertKind, Cli, PkiCommand};

pub(super) fn pki_command(cli: &Cli, cmd: &PkiCommand) -> anyhow::Result<ExitCode> {
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

pub(super) fn read_cert(path: &Path) -> anyhow::Result<X509> {
    let pem = pki::read(path)?;
    X509::from_pem(&pem).map_err(|_| anyhow!("{}: not a PEM certificate", path.display()))
}
