//! Exporting the access log as JSON Lines or CSV, paging through it in `seq` order.

use std::io::Write;

use super::AuditError;
use crate::store::{AuditQuery, AuditRecord, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

const COLUMNS: [&str; 20] = [
    "seq",
    "ts",
    "interaction_id",
    "peer_ip",
    "client_id",
    "cert_thumbprint",
    "cert_subject",
    "cert_serial",
    "method",
    "route",
    "status",
    "outcome",
    "reason",
    "token_jti",
    "consent_id",
    "psu",
    "cert_previous",
    "latency_us",
    "prev_hash",
    "hash",
];

/// Writes the events with `from <= ts < to` and returns how many were written.
pub async fn export(
    store: &Store,
    from: Option<String>,
    to: Option<String>,
    format: Format,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    if format == Format::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    let mut query = AuditQuery {
        from,
        to,
        after_seq: 0,
        limit: 1000,
    };
    let mut count = 0;
    loop {
        let page = store.audit_events(&query).await.map_err(AuditError::from)?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        query.after_seq = last.seq;
        for record in &page {
            match format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut *out, record)
                        .map_err(|e| AuditError::Encode(e.to_string()))?;
                    writeln!(out)?;
                }
                Format::Csv => writeln!(out, "{}", csv_row(record))?,
            }
            count += 1;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

fn csv_row(r: &AuditRecord) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.seq.to_string(),
        r.ts.clone(),
        r.interaction_id.clone(),
        opt(&r.peer_ip),
        opt(&r.client_id),
        opt(&r.cert_thumbprint),
        opt(&r.cert_subject),
        opt(&r.cert_serial),
        r.method.clone(),
        r.route.clone(),
        r.status.to_string(),
        r.outcome.clone(),
        opt(&r.reason),
        opt(&r.token_jti),
        opt(&r.consent_id),
        opt(&r.psu),
        opt(&r.cert_previous),
        r.latency_us.to_string(),
        r.prev_hash.clone(),
        r.hash.clone(),
    ]
    .iter()
    .map(|v| csv_field(v))
    .collect::<Vec<_>>()
    .join(",")
}

/// RFC 4180 quoting; a leading formula character is neutralised so spreadsheets don't execute it.
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("CN=a,O=b"), "\"CN=a,O=b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
    }
}
