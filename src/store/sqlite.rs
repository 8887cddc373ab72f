//! The SQLite backend: the embedded default. WAL journal with `synchronous = FULL`, so a
//! committed audit batch survives a power cut.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::StoreError;
use super::sql::{Dialect, SqlStore};

/// The embedded backend.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const CLIENT_SELECT: &str = "SELECT c.client_id, c.name, c.status, c.roles, c.auth_method, \
     c.subject_dn, c.redirect_uris, c.jwks, c.created_at, \
     COALESCE((SELECT group_concat(thumbprint, ',') FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active'), '') AS thumbprints, \
     COALESCE((SELECT group_concat(issuer, char(31)) FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active' \
               AND cc.issuer_key IS NULL), '') AS issuers, \
     COALESCE((SELECT group_concat(issuer_key, ',') FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active'), '') AS issuer_keys \
     FROM clients c";

    const TRANSITION_CONSENT: &str = "UPDATE consents SET status = $1, status_updated_at = $2 \
     WHERE consent_id = $3 AND status IN (SELECT value FROM json_each($4))";

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// `BEGIN IMMEDIATE` takes SQLite's write lock with the first statement, which serialises
    /// audit appends across processes sharing the file.
    async fn begin_audit(
        conn: &mut PoolConnection<Self>,
    ) -> Result<Transaction<'_, Self>, StoreError> {
        Ok(sqlx::Connection::begin_with(&mut **conn, "BEGIN IMMEDIATE").await?)
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::UnsupportedUrl(crate::config::redact_url(url)))?;
        let file = path.split('?').next().unwrap_or(path);
        if let Some(dir) = Path::new(file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool: SqlitePool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(super::migrate_error)?;
        Ok(Self { pool })
    }
}
