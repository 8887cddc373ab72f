//! Durable storage: the client registry, consents, token revocations and the audit log.
//! The backend is chosen from the database URL's scheme; an unknown scheme is refused.

mod audit;
mod bank;
mod breaker;
mod clients;
mod consents;
mod grants;
mod payments;
mod postgres;
mod revocations;
mod sql;
mod sqlite;

pub use audit::{AuditQuery, AuditRecord};
pub use bank::{AccountRecord, CustomerRecord, SandboxSeed, TransactionQuery, TransactionRecord};
pub use clients::{CertAdded, CertRevoked, NewClient};
pub use grants::{GrantRecord, RefreshLookup};
pub use payments::{PaymentRecord, PaymentRefused};

pub use crate::consent::ConsentRecord;
pub use crate::registry::CertRecord;

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

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.ping().await,
            Self::Postgres(pg) => pg.call(pg.sql.ping()).await,
        }
    }
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
