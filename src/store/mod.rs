//! Durable storage: the client registry, consents, token revocations and the audit log.
//! The backend is chosen from the database URL's scheme; an unknown scheme is refused.

mod sql;
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
    /// The customer who authorised it.
    pub psu: Option<String>,
    /// JSON array of the account ids it covers, chosen by the customer.
    pub account_ids: String,
}

impl ConsentRecord {
    pub fn account_ids(&self) -> Vec<String> {
        serde_json::from_str(&self.account_ids).unwrap_or_default()
    }
}

/// A sandbox bank customer (PSU).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CustomerRecord {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRecord {
    pub account_id: String,
    pub owner: String,
    pub currency: String,
    pub account_type: String,
    pub account_sub_type: String,
    pub nickname: String,
    pub scheme_name: String,
    pub identification: String,
    pub name: String,
    pub opened_at: String,
    pub balance_minor: i64,
    pub updated_at: String,
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct TransactionRecord {
    pub transaction_id: String,
    pub account_id: String,
    pub booked_at: String,
    pub amount_minor: i64,
    pub credit_debit: String,
    pub code: String,
    pub reference: String,
    pub description: String,
    pub counterparty: String,
    pub balance_after_minor: i64,
}

/// Which transactions of one account to read, and which page.
#[derive(Clone, Debug)]
pub struct TransactionQuery {
    pub account_id: String,
    /// Inclusive lower bound on `booked_at` (UTC RFC 3339).
    pub from: Option<String>,
    /// Inclusive upper bound on `booked_at`.
    pub to: Option<String>,
    pub credits: bool,
    pub debits: bool,
    pub offset: i64,
    pub limit: i64,
}

/// Everything the sandbox bank is seeded with, written in one transaction.
pub struct SandboxSeed {
    pub customers: Vec<CustomerRecord>,
    pub accounts: Vec<AccountRecord>,
    pub transactions: Vec<TransactionRecord>,
}

/// An authorization grant (what one authorization code was exchanged for).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct GrantRecord {
    pub grant_id: String,
    pub client_id: String,
    pub cert_thumbprint: String,
    pub consent_id: String,
    pub scope: String,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a refresh token's hash leads to.
#[derive(Clone, Debug)]
pub enum RefreshLookup {
    Unknown,
    /// The current refresh token of its grant.
    Active(GrantRecord),
    /// A token rotated out earlier: presenting it again is reuse.
    RotatedOut(GrantRecord),
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PaymentRecord {
    pub payment_id: String,
    pub consent_id: String,
    pub client_id: String,
    pub account_id: String,
    pub transaction_id: String,
    pub status: String,
    pub data: String,
    pub created_at: String,
    pub status_updated_at: String,
    pub idempotency_key: String,
    pub request_hash: String,
}

/// Why a payment could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum PaymentRefused {
    #[error("consent {0} has already been used for a payment, or is no longer authorised")]
    ConsentNotAuthorised(String),
    #[error("x-idempotency-key was already used by this client")]
    IdempotencyKeyTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// Absent from the hashed form when empty, so events written before the column existed
    /// keep their hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psu: Option<String>,
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
