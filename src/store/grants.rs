//! Authorization grants, their refresh tokens and the access tokens issued from them.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::sql::{Dialect, SqlStore};
use super::{Store, StoreError};

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

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
{
    pub async fn insert_grant(
        &self,
        g: &GrantRecord,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO grants (grant_id, client_id, cert_thumbprint, consent_id, scope, status, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&g.grant_id)
        .bind(&g.client_id)
        .bind(&g.cert_thumbprint)
        .bind(&g.consent_id)
        .bind(&g.scope)
        .bind(&g.status)
        .bind(g.created_at)
        .bind(g.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, status, created_at) \
             VALUES ($1, $2, 'active', $3)",
        )
        .bind(refresh_hash)
        .bind(&g.grant_id)
        .bind(g.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn refresh_lookup(&self, hash: &str) -> Result<RefreshLookup, StoreError> {
        let row = sqlx::query("SELECT grant_id, status FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(RefreshLookup::Unknown);
        };
        let grant_id: String = row.try_get("grant_id")?;
        let status: String = row.try_get("status")?;
        let grant = sqlx::query_as::<_, GrantRecord>("SELECT * FROM grants WHERE grant_id = $1")
            .bind(&grant_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("refresh token of unknown grant {grant_id}"))
            })?;
        Ok(if status == "active" {
            RefreshLookup::Active(grant)
        } else {
            RefreshLookup::RotatedOut(grant)
        })
    }

    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        grant_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE refresh_tokens SET status = 'rotated' \
             WHERE token_hash = $1 AND grant_id = $2 AND status = 'active'",
        )
        .bind(old_hash)
        .bind(grant_id)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&done) != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, grant_id, status, created_at) \
             VALUES ($1, $2, 'active', $3)",
        )
        .bind(new_hash)
        .bind(grant_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn add_grant_token(
        &self,
        grant_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grant_access_tokens (jti, grant_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(jti)
        .bind(grant_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE grants SET status = 'revoked' WHERE grant_id = $1")
            .bind(grant_id)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT g.jti, g.expires_at, gr.client_id FROM grant_access_tokens g \
             JOIN grants gr ON gr.grant_id = g.grant_id \
             WHERE g.grant_id = $1 AND g.expires_at > $2",
        )
        .bind(grant_id)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut live = Vec::with_capacity(rows.len());
        for r in &rows {
            let (jti, exp, client): (String, i64, String) = (
                r.try_get("jti")?,
                r.try_get("expires_at")?,
                r.try_get("client_id")?,
            );
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
            )
            .bind(&jti)
            .bind(&client)
            .bind(exp)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            live.push((jti, exp));
        }
        tx.commit().await?;
        Ok(live)
    }

    pub async fn rebind_grant(
        &self,
        grant_id: &str,
        from_thumbprint: &str,
        to_thumbprint: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE grants SET cert_thumbprint = $1 WHERE grant_id = $2 AND cert_thumbprint = $3",
        )
        .bind(to_thumbprint)
        .bind(grant_id)
        .bind(from_thumbprint)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done) == 1)
    }
}

impl Store {
    pub async fn insert_grant(
        &self,
        g: &GrantRecord,
        refresh_hash: &str,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.insert_grant(g, refresh_hash).await,
            Self::Postgres(pg) => pg.call(pg.sql.insert_grant(g, refresh_hash)).await,
        }
    }

    pub async fn refresh_lookup(&self, hash: &str) -> Result<RefreshLookup, StoreError> {
        match self {
            Self::Sqlite(s) => s.refresh_lookup(hash).await,
            Self::Postgres(pg) => pg.call(pg.sql.refresh_lookup(hash)).await,
        }
    }

    /// Replaces the grant's current refresh token; false when `old` was not current any more
    /// (a concurrent rotation won).
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        grant_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.rotate_refresh(old_hash, new_hash, grant_id, now).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.rotate_refresh(old_hash, new_hash, grant_id, now))
                    .await
            }
        }
    }

    /// Remembers an access token issued from a grant, so revoking the grant can revoke it.
    pub async fn add_grant_token(
        &self,
        grant_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.add_grant_token(grant_id, jti, expires_at).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.add_grant_token(grant_id, jti, expires_at))
                    .await
            }
        }
    }

    /// Revokes a grant (its refresh tokens die with it) and records the revocation of every
    /// unexpired access token issued from it; returns those `(jti, expires_at)`.
    pub async fn revoke_grant(
        &self,
        grant_id: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.revoke_grant(grant_id, now).await,
            Self::Postgres(pg) => pg.call(pg.sql.revoke_grant(grant_id, now)).await,
        }
    }

    /// Moves a grant from one certificate of its client to another (certificate rotation);
    /// false when it was not bound to `from_thumbprint` any more (a concurrent refresh won).
    pub async fn rebind_grant(
        &self,
        grant_id: &str,
        from_thumbprint: &str,
        to_thumbprint: &str,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => {
                s.rebind_grant(grant_id, from_thumbprint, to_thumbprint)
                    .await
            }
            Self::Postgres(pg) => {
                pg.call(
                    pg.sql
                        .rebind_grant(grant_id, from_thumbprint, to_thumbprint),
                )
                .await
            }
        }
    }
}
