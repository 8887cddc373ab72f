//! Consents: what a customer agreed a TPP may see or pay, and where each stands.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};

use super::sql::{Dialect, SqlStore, storable};
use super::{ConsentRecord, Store, StoreError};
use crate::consent::{Kind, Status};

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
{
    pub async fn insert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO consents (consent_id, kind, client_id, status, data, risk, created_at, \
             status_updated_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.consent_id)
        .bind(c.kind.as_str())
        .bind(&c.client_id)
        .bind(c.status.as_str())
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
        if !storable(id) {
            return Ok(None);
        }
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
        kind: Kind,
        key: &str,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        if !(storable(client_id) && storable(key)) {
            return Ok(None);
        }
        Ok(sqlx::query_as::<_, ConsentRecord>(
            "SELECT * FROM consents WHERE client_id = $1 AND kind = $2 AND idempotency_key = $3",
        )
        .bind(client_id)
        .bind(kind.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn set_consent_status(
        &self,
        id: &str,
        status: Status,
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE consents SET status = $1, status_updated_at = $2 WHERE consent_id = $3",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    pub async fn transition_consent(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        now: &str,
    ) -> Result<bool, StoreError> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let from = serde_json::to_string(&from).unwrap_or_default();
        let done = sqlx::query(DB::TRANSITION_CONSENT)
            .bind(to.as_str())
            .bind(now)
            .bind(id)
            .bind(from)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    pub async fn authorise_consent(
        &self,
        id: &str,
        psu: &str,
        account_ids: &[String],
        now: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE consents SET status = 'Authorised', psu = $1, account_ids = $2, \
             status_updated_at = $3 WHERE consent_id = $4 AND status = 'AwaitingAuthorisation'",
        )
        .bind(psu)
        .bind(serde_json::to_string(account_ids).unwrap_or_else(|_| "[]".into()))
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    pub async fn consents_of_psu(&self, psu: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        Ok(sqlx::query_as::<_, ConsentRecord>(
            "SELECT * FROM consents WHERE psu = $1 ORDER BY status_updated_at DESC, consent_id",
        )
        .bind(psu)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    pub async fn insert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.insert_consent(c).await,
            Self::Postgres(pg) => pg.call(pg.sql.insert_consent(c)).await,
        }
    }

    pub async fn consent(&self, id: &str) -> Result<Option<ConsentRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.consent(id).await,
            Self::Postgres(pg) => pg.call(pg.sql.consent(id)).await,
        }
    }

    pub async fn consent_by_idempotency_key(
        &self,
        client_id: &str,
        kind: Kind,
        key: &str,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.consent_by_idempotency_key(client_id, kind, key).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.consent_by_idempotency_key(client_id, kind, key))
                    .await
            }
        }
    }

    pub async fn set_consent_status(
        &self,
        id: &str,
        status: Status,
        now: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.set_consent_status(id, status, now).await,
            Self::Postgres(pg) => pg.call(pg.sql.set_consent_status(id, status, now)).await,
        }
    }

    /// Moves a consent from one of `from` to `to`; false when it was in no such status (so two
    /// racing transitions cannot both succeed).
    pub async fn transition_consent(
        &self,
        id: &str,
        from: &[Status],
        to: Status,
        now: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.transition_consent(id, from, to, now).await,
            Self::Postgres(pg) => pg.call(pg.sql.transition_consent(id, from, to, now)).await,
        }
    }

    /// The customer's approval: `AwaitingAuthorisation` → `Authorised`, for these accounts.
    pub async fn authorise_consent(
        &self,
        id: &str,
        psu: &str,
        account_ids: &[String],
        now: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.authorise_consent(id, psu, account_ids, now).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.authorise_consent(id, psu, account_ids, now))
                    .await
            }
        }
    }

    /// Consents a customer has authorised, newest first.
    pub async fn consents_of_psu(&self, psu: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.consents_of_psu(psu).await,
            Self::Postgres(pg) => pg.call(pg.sql.consents_of_psu(psu)).await,
        }
    }
}
