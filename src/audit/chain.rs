//! The hash chain: each event's hash covers the one before it, so an auditor can prove the log
//! was neither edited nor cut (`obgate audit verify`).

use openssl::hash::{MessageDigest, hash};

use super::AuditError;
use crate::store::{AuditRecord, Store};

/// `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over `prev_hash` and the canonical JSON of the event (every field but `hash`,
/// keys sorted), hex-encoded.
pub fn chain_hash(record: &AuditRecord) -> Result<String, AuditError> {
    let mut value = serde_json::to_value(record).map_err(|e| AuditError::Encode(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("hash");
    }
    let canonical = serde_json::to_vec(&value).map_err(|e| AuditError::Encode(e.to_string()))?;
    let mut input = Vec::with_capacity(record.prev_hash.len() + canonical.len());
    input.extend_from_slice(record.prev_hash.as_bytes());
    input.extend_from_slice(&canonical);
    let digest =
        hash(MessageDigest::sha256(), &input).map_err(|e| AuditError::Encode(e.to_string()))?;
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The result of walking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { last_seq: i64 },
    Broken { seq: i64, reason: String },
}

/// Walks the whole log in `seq` order and reports the first broken link.
pub async fn verify(store: &Store) -> Result<Verdict, AuditError> {
    let mut expected_seq = 1;
    let mut prev = GENESIS.to_string();
    loop {
        let page = store
            .audit_events(&crate::store::AuditQuery {
                after_seq: expected_seq - 1,
                limit: 1000,
                ..Default::default()
            })
            .await?;
        if page.is_empty() {
            return Ok(Verdict::Intact {
                last_seq: expected_seq - 1,
            });
        }
        for record in page {
            if let Some(reason) = check_link(&record, expected_seq, &prev)? {
                return Ok(Verdict::Broken {
                    seq: expected_seq,
                    reason,
                });
            }
            prev = record.hash;
            expected_seq += 1;
        }
    }
}

pub(super) fn check_link(
    record: &AuditRecord,
    expected_seq: i64,
    prev: &str,
) -> Result<Option<String>, AuditError> {
    if record.seq != expected_seq {
        return Ok(Some(format!(
            "event missing: found seq {} where {expected_seq} should be",
            record.seq
        )));
    }
    if record.prev_hash != prev {
        return Ok(Some(
            "prev_hash does not match the previous event's hash".into(),
        ));
    }
    if chain_hash(record)? != record.hash {
        return Ok(Some("hash does not match the event's contents".into()));
    }
    Ok(None)
}
