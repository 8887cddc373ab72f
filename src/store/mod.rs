//! Durable storage: the client registry, consents, token revocations and the audit log.
//! The backend is chosen from the database URL's scheme; an unknown scheme is refused.

mod breaker;
pub mod postgres;
mod sql;
pub mod sqlite;

use serde::Serialize;

pub use crate::consent::ConsentRecord;
use crate::consent::{Kind, Status};
pub use crate::registry::CertRecord;
use crate::registry::{Client, ClientId, ClientStatus};

use postgres::PgStore;
use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error(
        "the database schema is behind this obgate (migrations {0} not applied): run `obgate migrate`"
    )]
    SchemaBehind(String),
    #[error(
        "the database was migrated by a newer obgate (migration {0} is unknown here): run the \
         newer obgate, or restore a matching backup"
    )]
    SchemaUnknown(i64),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("database: unreachable a moment ago; not tried again yet")]
    Unreachable,
    #[error("database: no answer in time")]
    NoAnswer,
}

impl StoreError {
    /// The database refused the data itself (a value out of range, a constraint, a limit): the
    /// same statement would be refused again, unlike a lock timeout, a deadlock or an outage.
    pub fn is_refusal_of_data(&self) -> bool {
        let Self::Db(sqlx::Error::Database(e)) = self else {
            return false;
        };
        if let Some(code) = sqlite_primary_code(e.as_ref()) {
            // Too big, constraint, mismatch, range.
            return matches!(code, 18 | 19 | 20 | 25);
        }
        // Data exception (22), integrity constraint (23), program limit (54).
        e.code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54"))
    }

    /// The database could not be reached (as opposed to refusing a statement).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable | Self::NoAnswer => true,
            Self::Db(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Self::Db(sqlx::Error::Database(e)) => match sqlite_primary_code(e.as_ref()) {
                // SQLite busy or locked past its busy timeout, an I/O error, a full disk, a
                // file it cannot open.
                Some(code) => matches!(code, 5 | 6 | 10 | 13 | 14),
                // PostgreSQL restarting or failing over: connection exceptions (08), operator
                // intervention (57: admin shutdown, cannot connect now), insufficient resources
                // (53), a standby not yet promoted (25006: read-only transaction).
                None => e.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("57")
                        || c.starts_with("53")
                        || c == "25006"
                }),
            },
            _ => false,
        }
    }
}

/// A SQLite error's primary result code (the low byte of the extended one); `None` for
/// PostgreSQL's.
fn sqlite_primary_code(e: &dyn sqlx::error::DatabaseError) -> Option<u32> {
    e.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    e.code()?.parse::<u32>().ok().map(|c| c & 0xff)
}

/// Errors that may carry a database error, for the PostgreSQL breaker to judge.
trait StoreFailure {
    fn store_error(&self) -> Option<&StoreError>;
}

impl StoreFailure for StoreError {
    fn store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

impl StoreFailure for PaymentRefused {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// What to do with a schema that is not this binary's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Apply what is pending (`obgate migrate`, and the embedded SQLite default).
    Apply,
    /// Refuse a schema that is behind or ahead (`obgate serve` on PostgreSQL).
    RequireCurrent,
}

/// The storage backend, chosen by the database URL's scheme.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// `sqlite://PATH` (migrated on connect: the embedded default needs no extra step) or
    /// `postgres://…` (migrated only with [`Migrations::Apply`]); any other scheme is refused.
    pub async fn connect_with(url: &str, migrations: Migrations) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgStore::connect(url, migrations).await?))
        } else {
            Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)))
        }
    }

    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, Migrations::Apply).await
    }

    /// Appends a batch of audit events to the chain, continuing from the stored head under the
    /// audit table's write lock.
    pub async fn append_audit_chained<E>(
        &self,
        chain: impl FnOnce(Option<(i64, String)>) -> Result<Vec<AuditRecord>, E>,
    ) -> Result<Result<Vec<AuditRecord>, E>, StoreError> {
        match self {
            Self::Sqlite(s) => s.append_audit_chained(chain).await,
            Self::Postgres(p) => {
                p.admit()?;
                let result =
                    tokio::time::timeout(postgres::CALL_TIMEOUT, p.append_audit_chained(chain))
                        .await
                        .unwrap_or(Err(StoreError::NoAnswer));
                p.observe(result.as_ref().err());
                result
            }
        }
    }
}

/// Both backends answer the same calls; this forwards each to the one in use.
macro_rules! delegate {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)* ) -> $ret:ty; )*) => {
        impl Store {
            $(
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Self::Sqlite(s) => s.$name($($arg),*).await,
                        Self::Postgres(p) => {
                            p.admit()?;
                            let result = tokio::time::timeout(postgres::CALL_TIMEOUT, p.$name($($arg),*))
                                .await
                                .unwrap_or_else(|_| Err(StoreError::NoAnswer.into()));
                            p.observe(result.as_ref().err().and_then(StoreFailure::store_error));
                            result
                        }
                    }
                }
            )*
        }
    };
}

delegate! {
    fn ping(&self) -> Result<(), StoreError>;
    fn insert_client(&self, new: &NewClient, now: &str) -> Result<(), StoreError>;
    fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError>;
    fn clients(&self) -> Result<Vec<Client>, StoreError>;
    fn set_client_status(&self, id: &ClientId, status: ClientStatus, now: &str) -> Result<bool, StoreError>;
    fn self_signed_thumbprints(&self) -> Result<Vec<String>, StoreError>;
    fn client_certificates(&self) -> Result<Vec<(String, CertRecord)>, StoreError>;
    fn insert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError>;
    fn consent(&self, id: &str) -> Result<Option<ConsentRecord>, StoreError>;
    fn consent_by_idempotency_key(&self, client_id: &str, kind: Kind, key: &str) -> Result<Option<ConsentRecord>, StoreError>;
    fn set_consent_status(&self, id: &str, status: Status, now: &str) -> Result<bool, StoreError>;
    fn transition_consent(&self, id: &str, from: &[Status], to: Status, now: &str) -> Result<bool, StoreError>;
    fn authorise_consent(&self, id: &str, psu: &str, account_ids: &[String], now: &str) -> Result<bool, StoreError>;
    fn consents_of_psu(&self, psu: &str) -> Result<Vec<ConsentRecord>, StoreError>;
    fn seed_sandbox(&self, seed: &SandboxSeed) -> Result<bool, StoreError>;
    fn customer(&self, username: &str) -> Result<Option<CustomerRecord>, StoreError>;
    fn accounts_of(&self, owner: &str) -> Result<Vec<AccountRecord>, StoreError>;
    fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError>;
    fn transactions(&self, q: &TransactionQuery) -> Result<(Vec<TransactionRecord>, i64), StoreError>;
    fn insert_grant(&self, g: &GrantRecord, refresh_hash: &str) -> Result<(), StoreError>;
    fn refresh_lookup(&self, hash: &str) -> Result<RefreshLookup, StoreError>;
    fn rotate_refresh(&self, old_hash: &str, new_hash: &str, grant_id: &str, now: i64) -> Result<bool, StoreError>;
    fn add_grant_token(&self, grant_id: &str, jti: &str, expires_at: i64) -> Result<(), StoreError>;
    fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<Vec<(String, i64)>, StoreError>;
    fn create_payment(&self, p: &PaymentRecord, t: &TransactionRecord) -> Result<PaymentRecord, PaymentRefused>;
    fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError>;
    fn payment_by_idempotency_key(&self, client_id: &str, key: &str) -> Result<Option<PaymentRecord>, StoreError>;
    fn insert_funds_confirmation(&self, id: &str, consent_id: &str, client_id: &str, data: &str, now: &str) -> Result<(), StoreError>;
    fn insert_revocation(&self, jti: &str, client_id: &str, expires_at: i64, now: i64) -> Result<(), StoreError>;
    fn live_revocations(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError>;
    fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError>;
    fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
    fn audit_event_ids_present(&self, ids: &[String]) -> Result<Vec<String>, StoreError>;
}

/// `applied` must be exactly `known`: anything missing is pending, anything extra is unknown.
pub(crate) fn check_versions(applied: &[i64], known: &[i64]) -> Result<(), StoreError> {
    if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
        return Err(StoreError::SchemaUnknown(*v));
    }
    let pending: Vec<String> = known
        .iter()
        .filter(|v| !applied.contains(v))
        .map(ToString::to_string)
        .collect();
    if pending.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaBehind(pending.join(", ")))
    }
}

/// A migration that names a version this binary does not have is a newer schema.
pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::SchemaUnknown(v),
        other => StoreError::Migrate(other),
    }
}

/// A client to register, with the certificate it registered over.
pub struct NewClient {
    pub client: crate::registry::Client,
    pub cert: CertRecord,
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
    /// The writer's own id for the event; not part of the hashed form, not exported.
    #[serde(skip_serializing)]
    pub event_id: Option<String>,
}

/// Filters for reading the audit log; `from`/`to` are RFC 3339 timestamps (inclusive, exclusive).
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub after_seq: i64,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, SqliteConnection};

    #[tokio::test]
    async fn a_busy_sqlite_database_is_unavailable_and_refused_data_is_not()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("b.db").display());
        let mut writer = SqliteConnection::connect(&url).await?;
        sqlx::query("CREATE TABLE t (i INTEGER CHECK (i > 0))")
            .execute(&mut writer)
            .await?;
        let refused = sqlx::query("INSERT INTO t VALUES (0)")
            .execute(&mut writer)
            .await
            .err()
            .ok_or("the check let 0 in")?;
        let refused = StoreError::Db(refused);
        assert!(!refused.is_unavailable());
        assert!(refused.is_refusal_of_data());

        sqlx::query("BEGIN IMMEDIATE").execute(&mut writer).await?;
        let mut other = SqliteConnection::connect(&url).await?;
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut other)
            .await?;
        let busy = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .err()
            .ok_or("wrote past another writer's lock")?;
        let busy = StoreError::Db(busy);
        assert!(busy.is_unavailable());
        assert!(!busy.is_refusal_of_data(), "a lock is not the data's fault");
        Ok(())
    }
}
