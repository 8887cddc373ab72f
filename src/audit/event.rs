//! What an audit event says: who (peer, client, certificate, customer), what (method, route,
//! token, consent), and the outcome, before it gets its place in the chain.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::chain::chain_hash;
use crate::registry::CertFacts;
use crate::store::AuditRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

/// Who and what a request concerned, as far as the gateway has established it: the guard and
/// the token endpoint's client authentication say whose token or which client, the extractors
/// and grants which consent and token, the customer's sign-in which customer. The edge turns it
/// into the request's event.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub client_id: Option<String>,
    /// The bank customer a customer page acted for (the username they gave).
    pub psu: Option<String>,
    pub token_jti: Option<String>,
    pub consent_id: Option<String>,
    /// The certificate a rotating refresh moved the grant from.
    pub previous_cert: Option<String>,
}

/// What happened, before it gets its place in the chain. Holds no token, code or key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEvent {
    pub ts: String,
    pub interaction_id: String,
    pub peer_ip: Option<IpAddr>,
    pub client_id: Option<String>,
    pub cert: CertFacts,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub token_jti: Option<String>,
    pub consent_id: Option<String>,
    /// The bank customer, on the customer's pages.
    pub psu: Option<String>,
    /// The certificate a rotating refresh moved the grant from (reason `cert_rotated`).
    pub cert_previous: Option<String>,
    pub latency_us: u64,
}

/// Control characters (NUL above all, which PostgreSQL refuses in text) never reach the log:
/// one unstorable value must not hold back every event after it.
fn clean(s: String) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect()
    } else {
        s
    }
}

/// Route recorded for refused TLS handshakes.
pub const HANDSHAKE_ROUTE: &str = "(tls-handshake)";

impl AuditEvent {
    /// The event for a refused client certificate: no HTTP request ever existed. `reason` is
    /// the short machine reason, `detail` what the TLS library said.
    pub fn handshake_refused(
        at: time::OffsetDateTime,
        peer: Option<IpAddr>,
        cert: CertFacts,
        reason: &str,
        detail: &str,
    ) -> Self {
        Self {
            ts: crate::clock::timestamp(at),
            interaction_id: uuid::Uuid::new_v4().to_string(),
            peer_ip: peer,
            client_id: None,
            cert,
            method: "-".into(),
            route: HANDSHAKE_ROUTE.into(),
            status: 0,
            outcome: Outcome::Denied,
            reason: Some(format!("{reason}: {detail}")),
            token_jti: None,
            consent_id: None,
            psu: None,
            cert_previous: None,
            latency_us: 0,
        }
    }

    pub(super) fn into_record(
        self,
        seq: i64,
        prev_hash: String,
    ) -> Result<AuditRecord, AuditError> {
        let opt = |v: Option<String>| v.map(clean);
        let mut record = AuditRecord {
            seq,
            ts: clean(self.ts),
            interaction_id: clean(self.interaction_id),
            peer_ip: self.peer_ip.map(|ip| ip.to_string()),
            client_id: opt(self.client_id),
            cert_thumbprint: opt(self.cert.thumbprint),
            cert_subject: opt(self.cert.subject),
            cert_serial: opt(self.cert.serial),
            method: clean(self.method),
            route: clean(self.route),
            status: i64::from(self.status),
            outcome: self.outcome.as_str().to_string(),
            reason: opt(self.reason),
            token_jti: opt(self.token_jti),
            consent_id: opt(self.consent_id),
            psu: opt(self.psu),
            cert_previous: opt(self.cert_previous),
            latency_us: i64::try_from(self.latency_us).unwrap_or(i64::MAX),
            prev_hash,
            hash: String::new(),
            event_id: None,
        };
        record.hash = chain_hash(&record)?;
        Ok(record)
    }
}
