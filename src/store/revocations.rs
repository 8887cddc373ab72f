//! Revoked access tokens, kept until they would have expired.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::sql::{Dialect, SqlStore};
use super::{Store, StoreError};

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
{
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

    pub async fn live_revocations(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }
}

impl Store {
    pub async fn insert_revocation(
        &self,
        jti: &str,
        client_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.insert_revocation(jti, client_id, expires_at, now).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.insert_revocation(jti, client_id, expires_at, now))
                    .await
            }
        }
    }

    /// Revocations of tokens that have not expired yet: `(jti, expires_at)`.
    pub async fn live_revocations(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.live_revocations(now).await,
            Self::Postgres(pg) => pg.call(pg.sql.live_revocations(now)).await,
        }
    }
}
