//! The SQLite backend: the embedded default. WAL journal with `synchronous = FULL`, so a
//! committed audit batch survives a power cut.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool as Pool};

use super::{AuditQuery, AuditRecord, CertRecord, ConsentRecord, NewClient, StoreError};
use crate::oauth::clients::{AuthMethod, Client, ClientId, ClientStatus, Role};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    pool: Pool,
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    client_id: String,
    name: String,
    status: String,
    roles: String,
    auth_method: String,
    subject_dn: Option<String>,
    redirect_uris: String,
    created_at: String,
    thumbprints: String,
    issuers: String,
}

impl ClientRow {
    fn into_client(self) -> Result<Client, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("client {}: {e}", self.client_id));
        Ok(Client {
            client_id: ClientId::from_str(&self.client_id).map_err(corrupt)?,
            name: self.name.clone(),
            status: ClientStatus::from_str(&self.status).map_err(corrupt)?,
            roles: Role::parse_list(&self.roles).map_err(corrupt)?,
            auth_method: AuthMethod::from_str(&self.auth_method).map_err(corrupt)?,
            subject_dn: self.subject_dn.clone(),
            cert_thumbprints: list(&self.thumbprints, ','),
            cert_issuers: list(&self.issuers, ISSUER_SEPARATOR),
            redirect_uris: serde_json::from_str(&self.redirect_uris)
                .map_err(|e| corrupt(e.to_string()))?,
            created_at: self.created_at.clone(),
        })
    }
}

const CLIENT_SELECT: &str = "SELECT c.client_id, c.name, c.status, c.roles, c.auth_method, \
     c.subject_dn, c.redirect_uris, c.created_at, \
     COALESCE((SELECT group_concat(thumbprint, ',') FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active'), '') AS thumbprints, \
     COALESCE((SELECT group_concat(issuer, char(31)) FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active'), '') AS issuers \
     FROM clients c";

/// Separates issuer DNs in one column: the ASCII unit separator, which DNs do not contain.
const ISSUER_SEPARATOR: char = '\u{1f}';

/// A `group_concat` column as a sorted list without duplicates.
fn list(column: &str, separator: char) -> Vec<String> {
    let mut items: Vec<String> = column
        .split(separator)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .collect();
    items.sort();
    items.dedup();
    items
}

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
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- clients ----

    pub async fn insert_client(&self, new: &NewClient, now: &str) -> Result<(), StoreError> {
        let c = &new.client;
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(c.client_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!("client {}", c.client_id)));
        }
        let taken = sqlx::query("SELECT client_id FROM client_certificates WHERE thumbprint = $1")
            .bind(&new.cert.thumbprint)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = taken {
            let owner: String = row.try_get("client_id")?;
            return Err(StoreError::Conflict(format!(
                "certificate {} (registered to client {owner})",
                new.cert.thumbprint
            )));
        }
        sqlx::query(
            "INSERT INTO clients (client_id, name, status, roles, auth_method, subject_dn, \
             redirect_uris, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(c.client_id.as_str())
        .bind(&c.name)
        .bind(c.status.as_str())
        .bind(Role::join(&c.roles))
        .bind(c.auth_method.as_str())
        .bind(&c.subject_dn)
        .bind(
            serde_json::to_string(&c.redirect_uris)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO client_certificates (thumbprint, client_id, subject, issuer, serial, \
             not_after, added_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&new.cert.thumbprint)
        .bind(c.client_id.as_str())
        .bind(&new.cert.subject)
        .bind(&new.cert.issuer)
        .bind(&new.cert.serial)
        .bind(new.cert.not_after)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        let sql = format!("{CLIENT_SELECT} WHERE c.client_id = $1");
        sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(ClientRow::into_client)
            .transpose()
    }

    pub async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let sql = format!("{CLIENT_SELECT} ORDER BY c.client_id");
        sqlx::query_as::<_, ClientRow>(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(ClientRow::into_client)
            .collect()
    }

    /// Returns false when there is no such client.
    pub async fn set_client_status(
        &self,
        id: &ClientId,
        status: ClientStatus,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE clients SET status = $1, updated_at = $2 WHERE client_id = $3")
                .bind(status.as_str())
                .bind(now)
                .bind(id.as_str())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Active certificates of clients that authenticate with `self_signed_tls_client_auth`.
    pub async fn self_signed_thumbprints(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT cc.thumbprint FROM client_certificates cc JOIN clients c USING (client_id) \
             WHERE c.auth_method = 'self_signed_tls_client_auth' AND cc.status = 'active'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("thumbprint")
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// Active certificates with their owners, for the certificate-expiry metric.
    pub async fn client_certificates(&self) -> Result<Vec<(String, CertRecord)>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, thumbprint, subject, issuer, serial, not_after \
             FROM client_certificates WHERE status = 'active'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("client_id")?,
                    CertRecord {
                        thumbprint: r.try_get("thumbprint")?,
                        subject: r.try_get("subject")?,
                        issuer: r.try_get("issuer")?,
                        serial: r.try_get("serial")?,
                        not_after: r.try_get("not_after")?,
                    },
                ))
            })
            .collect()
    }

    // ---- consents ----

    pub async fn insert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO consents (consent_id, kind, client_id, status, data, risk, created_at, \
             status_updated_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.consent_id)
        .bind(&c.kind)
        .bind(&c.client_id)
        .bind(&c.status)
        .bind(&c.data)
        .bind(&c.risk)
        .bind(&c.created_at)
        .bind(&c.status_updated_at)
        .bind(&c.idempotency_key)
        .bind(&c.request_hash)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("consent with idempotency key {:?}", c.idempotency_key),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn consent(&self, id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        Ok(
            sqlx::query_as::<_, ConsentRecord>("SELECT * FROM consents WHERE consent_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn consent_by_idempotency_key(
        &self,
        client_id: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        Ok(sqlx::query_as::<_, ConsentRecord>(
            "SELECT * FROM consents WHERE client_id = $1 AND kind = $2 AND idempotency_key = $3",
        )
        .bind(client_id)
        .bind(kind)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn set_consent_status(
        &self,
        id: &str,
        status: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE consents SET status = $1, status_updated_at = $2 WHERE consent_id = $3",
        )
        .bind(status)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- token revocations ----

    pub async fn insert_revocation(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(client_id)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revocations of tokens that have not expired yet: `(jti, expires_at)`.
    pub async fn live_revocations(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }

    // ---- audit log ----

    /// Appends a batch of chained events as one statement (one implicit transaction): all or
    /// nothing, in a single round trip to the database thread.
    pub async fn append_audit(&self, batch: &[AuditRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_events (seq, ts, interaction_id, peer_ip, client_id, \
             cert_thumbprint, cert_subject, cert_serial, method, route, status, outcome, reason, \
             token_jti, consent_id, latency_us, prev_hash, hash) ",
        );
        insert.push_values(batch, |mut row, e| {
            row.push_bind(e.seq)
                .push_bind(&e.ts)
                .push_bind(&e.interaction_id)
                .push_bind(&e.peer_ip)
                .push_bind(&e.client_id)
                .push_bind(&e.cert_thumbprint)
                .push_bind(&e.cert_subject)
                .push_bind(&e.cert_serial)
                .push_bind(&e.method)
                .push_bind(&e.route)
                .push_bind(e.status)
                .push_bind(&e.outcome)
                .push_bind(&e.reason)
                .push_bind(&e.token_jti)
                .push_bind(&e.consent_id)
                .push_bind(e.latency_us)
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash);
        });
        insert.build().execute(&self.pool).await?;
        Ok(())
    }

    /// The newest event's `(seq, hash)`, where the chain continues.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    /// Events in `seq` order after `q.after_seq`, within the time range, at most `q.limit`.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRecord>(
            "SELECT * FROM audit_events WHERE seq > $1 \
             AND ($2 IS NULL OR ts >= $2) AND ($3 IS NULL OR ts < $3) \
             ORDER BY seq LIMIT $4",
        )
        .bind(q.after_seq)
        .bind(&q.from)
        .bind(&q.to)
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
