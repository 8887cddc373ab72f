//! Durable storage: the client registry, consents, token revocations and the audit log.
//! The backend is chosen from the database URL's scheme; an unknown scheme is refused.

pub mod sqlite;

use serde::Serialize;

pub use sqlite::SqliteStore as Store;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: use sqlite://PATH")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// A client to register, with the certificate it registered over.
pub struct NewClient {
    pub client: crate::oauth::clients::Client,
    pub cert: CertRecord,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CertRecord {
    pub thumbprint: String,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_after: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConsentRecord {
    pub consent_id: String,
    pub kind: String,
    pub client_id: String,
    pub status: String,
    pub data: String,
    pub risk: String,
    pub created_at: String,
    pub status_updated_at: String,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
}

/// One audit event as stored, chain fields included (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub ts: String,
    pub interaction_id: String,
    pub peer_ip: Option<String>,
    pub client_id: Option<String>,
    pub cert_thumbprint: Option<String>,
    pub cert_subject: Option<String>,
    pub cert_serial: Option<String>,
    pub method: String,
    pub route: String,
    pub status: i64,
    pub outcome: String,
    pub reason: Option<String>,
    pub token_jti: Option<String>,
    pub consent_id: Option<String>,
    pub latency_us: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// Filters for reading the audit log; `from`/`to` are RFC 3339 timestamps (inclusive, exclusive).
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub after_seq: i64,
    pub limit: i64,
}
