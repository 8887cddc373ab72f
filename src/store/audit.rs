//! The audit log: one hash chain of events, appended a batch at a time.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use serde::Serialize;

use super::sql::{Dialect, SqlStore};
use super::{Store, StoreError};

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
    /// The certificate a rotating refresh moved the grant from; absent from the hashed form
    /// when empty, like `psu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_previous: Option<String>,
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

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
{
    /// Appends a batch of events to the chain in one write transaction: the head is read under
    /// the database's write lock, so several processes writing to one database keep one
    /// unbroken chain. `chain` turns the head `(seq, hash)` (none in an empty log) into the
    /// batch's records.
    pub async fn append_audit_chained<E>(
        &self,
        chain: impl FnOnce(Option<(i64, String)>) -> Result<Vec<AuditRecord>, E>,
    ) -> Result<Result<Vec<AuditRecord>, E>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let appended = Self::append_audit_on(&mut conn, chain).await;
        if appended.is_err() {
            // A failed statement or COMMIT can leave the connection inside its transaction
            // (SQLite keeps it open after SQLITE_FULL at COMMIT), and sqlx then refuses every
            // later BEGIN on it: it is closed, not handed back to the pool.
            conn.close_on_drop();
        }
        appended
    }

    async fn append_audit_on<E>(
        conn: &mut sqlx::pool::PoolConnection<DB>,
        chain: impl FnOnce(Option<(i64, String)>) -> Result<Vec<AuditRecord>, E>,
    ) -> Result<Result<Vec<AuditRecord>, E>, StoreError> {
        let mut tx = DB::begin_audit(conn).await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let head = match head {
            Some(r) => Some((r.try_get("seq")?, r.try_get("hash")?)),
            None => None,
        };
        let batch = match chain(head) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        if batch.is_empty() {
            return Ok(Ok(batch));
        }
        let mut insert = sqlx::QueryBuilder::<DB>::new(
            "INSERT INTO audit_events (seq, ts, interaction_id, peer_ip, client_id, \
             cert_thumbprint, cert_subject, cert_serial, method, route, status, outcome, reason, \
             token_jti, consent_id, psu, latency_us, prev_hash, hash, event_id, cert_previous) ",
        );
        insert.push_values(&batch, |mut row, e| {
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
                .push_bind(&e.psu)
                .push_bind(e.latency_us)
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash)
                .push_bind(&e.event_id)
                .push_bind(&e.cert_previous);
        });
        insert.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Ok(batch))
    }

    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("hash")?)))
            .transpose()
    }

    pub async fn audit_event_ids_present(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut present = Vec::new();
        for chunk in ids.chunks(500) {
            let mut q = sqlx::QueryBuilder::<DB>::new(
                "SELECT event_id FROM audit_events WHERE event_id IN (",
            );
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            q.push(")");
            for row in q.build().fetch_all(&self.pool).await? {
                present.push(row.try_get("event_id")?);
            }
        }
        Ok(present)
    }

    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRecord>(
            "SELECT * FROM audit_events WHERE seq > $1 \
             AND (CAST($2 AS TEXT) IS NULL OR ts >= CAST($2 AS TEXT)) \
             AND (CAST($3 AS TEXT) IS NULL OR ts < CAST($3 AS TEXT)) \
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

impl Store {
    /// Appends a batch of audit events to the chain, continuing from the stored head under the
    /// audit table's write lock.
    pub async fn append_audit_chained<E>(
        &self,
        chain: impl FnOnce(Option<(i64, String)>) -> Result<Vec<AuditRecord>, E>,
    ) -> Result<Result<Vec<AuditRecord>, E>, StoreError> {
        match self {
            Self::Sqlite(s) => s.append_audit_chained(chain).await,
            Self::Postgres(pg) => pg.call(pg.sql.append_audit_chained(chain)).await,
        }
    }

    /// The newest event's `(seq, hash)`, where the chain continues.
    pub async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.audit_head().await,
            Self::Postgres(pg) => pg.call(pg.sql.audit_head()).await,
        }
    }

    /// Which of these event ids are already in the log.
    pub async fn audit_event_ids_present(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.audit_event_ids_present(ids).await,
            Self::Postgres(pg) => pg.call(pg.sql.audit_event_ids_present(ids)).await,
        }
    }

    /// Events in `seq` order after `q.after_seq`, within the time range, at most `q.limit`.
    pub async fn audit_events(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.audit_events(q).await,
            Self::Postgres(pg) => pg.call(pg.sql.audit_events(q)).await,
        }
    }
}
