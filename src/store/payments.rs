//! Payments and funds confirmations.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::sql::{Dialect, SqlStore, storable};
use super::{Store, StoreError, TransactionRecord};

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

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
{
    pub async fn create_payment(
        &self,
        p: &PaymentRecord,
        t: &TransactionRecord,
    ) -> Result<PaymentRecord, PaymentRefused> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let consumed = sqlx::query(
            "UPDATE consents SET status = 'Consumed', status_updated_at = $1 \
             WHERE consent_id = $2 AND status = 'Authorised'",
        )
        .bind(&p.created_at)
        .bind(&p.consent_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if DB::rows_affected(&consumed) != 1 {
            return Err(PaymentRefused::ConsentNotAuthorised(p.consent_id.clone()));
        }
        let balance: i64 = sqlx::query(
            "UPDATE accounts SET balance_minor = balance_minor - $1, updated_at = $2 \
             WHERE account_id = $3 RETURNING balance_minor",
        )
        .bind(t.amount_minor)
        .bind(&p.created_at)
        .bind(&t.account_id)
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("balance_minor"))
        .map_err(StoreError::from)?;
        sqlx::query(
            "INSERT INTO transactions (transaction_id, account_id, booked_at, amount_minor, \
             credit_debit, code, reference, description, counterparty, balance_after_minor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.transaction_id)
        .bind(&t.account_id)
        .bind(&t.booked_at)
        .bind(t.amount_minor)
        .bind(&t.credit_debit)
        .bind(&t.code)
        .bind(&t.reference)
        .bind(&t.description)
        .bind(&t.counterparty)
        .bind(balance)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let inserted = sqlx::query(
            "INSERT INTO payments (payment_id, consent_id, client_id, account_id, transaction_id, \
             status, data, created_at, status_updated_at, idempotency_key, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&p.payment_id)
        .bind(&p.consent_id)
        .bind(&p.client_id)
        .bind(&p.account_id)
        .bind(&p.transaction_id)
        .bind(&p.status)
        .bind(&p.data)
        .bind(&p.created_at)
        .bind(&p.status_updated_at)
        .bind(&p.idempotency_key)
        .bind(&p.request_hash)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(PaymentRefused::IdempotencyKeyTaken);
            }
            Err(e) => return Err(StoreError::from(e).into()),
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(p.clone())
    }

    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, PaymentRecord>("SELECT * FROM payments WHERE payment_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn payment_by_idempotency_key(
        &self,
        client_id: &str,
        key: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        if !(storable(client_id) && storable(key)) {
            return Ok(None);
        }
        Ok(sqlx::query_as::<_, PaymentRecord>(
            "SELECT * FROM payments WHERE client_id = $1 AND idempotency_key = $2",
        )
        .bind(client_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insert_funds_confirmation(
        &self,
        id: &str,
        consent_id: &str,
        client_id: &str,
        data: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO funds_confirmations (confirmation_id, consent_id, client_id, data, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(consent_id)
        .bind(client_id)
        .bind(data)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Records a payment atomically: the consent goes `Authorised` → `Consumed` (so it pays
    /// once), the debtor account is debited, the transaction and the payment are written.
    pub async fn create_payment(
        &self,
        p: &PaymentRecord,
        t: &TransactionRecord,
    ) -> Result<PaymentRecord, PaymentRefused> {
        match self {
            Self::Sqlite(s) => s.create_payment(p, t).await,
            Self::Postgres(pg) => pg.call(pg.sql.create_payment(p, t)).await,
        }
    }

    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.payment(id).await,
            Self::Postgres(pg) => pg.call(pg.sql.payment(id)).await,
        }
    }

    pub async fn payment_by_idempotency_key(
        &self,
        client_id: &str,
        key: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.payment_by_idempotency_key(client_id, key).await,
            Self::Postgres(pg) => {
                pg.call(pg.sql.payment_by_idempotency_key(client_id, key))
                    .await
            }
        }
    }

    pub async fn insert_funds_confirmation(
        &self,
        id: &str,
        consent_id: &str,
        client_id: &str,
        data: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => {
                s.insert_funds_confirmation(id, consent_id, client_id, data, now)
                    .await
            }
            Self::Postgres(pg) => {
                pg.call(
                    pg.sql
                        .insert_funds_confirmation(id, consent_id, client_id, data, now),
                )
                .await
            }
        }
    }
}
