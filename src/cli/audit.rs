//! `obgate audit`: export and verify the access log.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;

use crate::audit::export::{self};
use crate::audit::{self, Verdict};
use crate::clock;
use crate::store::{Migrations, Store};

use super::{AuditCommand, Cli, settings};

pub(super) async fn audit_command(cli: &Cli, cmd: &AuditCommand) -> anyhow::Result<ExitCode> {
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
