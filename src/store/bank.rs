//! The sandbox bank: its customers, their accounts and transactions.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Row, Type};

use super::sql::{Dialect, SqlStore, storable};
use super::{Store, StoreError};

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

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
{
    pub async fn seed_sandbox(&self, seed: &SandboxSeed) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let existing: i64 = sqlx::query("SELECT count(*) AS n FROM customers")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if existing > 0 {
            return Ok(false);
        }
        for c in &seed.customers {
            sqlx::query(
                "INSERT INTO customers (username, display_name, password_hash) VALUES ($1, $2, $3)",
            )
            .bind(&c.username)
            .bind(&c.display_name)
            .bind(&c.password_hash)
            .execute(&mut *tx)
            .await?;
        }
        for a in &seed.accounts {
            sqlx::query(
                "INSERT INTO accounts (account_id, owner, currency, account_type, \
                 account_sub_type, nickname, scheme_name, identification, name, opened_at, \
                 balance_minor, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&a.account_id)
            .bind(&a.owner)
            .bind(&a.currency)
            .bind(&a.account_type)
            .bind(&a.account_sub_type)
            .bind(&a.nickname)
            .bind(&a.scheme_name)
            .bind(&a.identification)
            .bind(&a.name)
            .bind(&a.opened_at)
            .bind(a.balance_minor)
            .bind(&a.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in seed.transactions.chunks(256) {
            let mut insert = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO transactions (transaction_id, account_id, booked_at, amount_minor, \
                 credit_debit, code, reference, description, counterparty, balance_after_minor) ",
            );
            insert.push_values(chunk, |mut row, t| {
                row.push_bind(&t.transaction_id)
                    .push_bind(&t.account_id)
                    .push_bind(&t.booked_at)
                    .push_bind(t.amount_minor)
                    .push_bind(&t.credit_debit)
                    .push_bind(&t.code)
                    .push_bind(&t.reference)
                    .push_bind(&t.description)
                    .push_bind(&t.counterparty)
                    .push_bind(t.balance_after_minor);
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn customer(&self, username: &str) -> Result<Option<CustomerRecord>, StoreError> {
        if !storable(username) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, CustomerRecord>("SELECT * FROM customers WHERE username = $1")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn accounts_of(&self, owner: &str) -> Result<Vec<AccountRecord>, StoreError> {
        Ok(sqlx::query_as::<_, AccountRecord>(
            "SELECT * FROM accounts WHERE owner = $1 ORDER BY opened_at, account_id",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError> {
        if !storable(id) {
            return Ok(None);
        }
        Ok(
            sqlx::query_as::<_, AccountRecord>("SELECT * FROM accounts WHERE account_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn transactions(
        &self,
        q: &TransactionQuery,
    ) -> Result<(Vec<TransactionRecord>, i64), StoreError> {
        const FILTER: &str = "account_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR booked_at >= CAST($2 AS TEXT)) \
             AND (CAST($3 AS TEXT) IS NULL OR booked_at <= CAST($3 AS TEXT)) \
             AND ((credit_debit = 'Credit' AND $4) OR (credit_debit = 'Debit' AND $5))";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) AS n FROM transactions WHERE {FILTER}"
        )))
        .bind(&q.account_id)
        .bind(&q.from)
        .bind(&q.to)
        .bind(q.credits)
        .bind(q.debits)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let page = sqlx::query_as::<_, TransactionRecord>(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM transactions WHERE {FILTER} \
             ORDER BY booked_at, transaction_id LIMIT $6 OFFSET $7"
        )))
        .bind(&q.account_id)
        .bind(&q.from)
        .bind(&q.to)
        .bind(q.credits)
        .bind(q.debits)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((page, total))
    }
}

impl Store {
    /// Seeds the sandbox bank unless it already has customers; true when it seeded.
    pub async fn seed_sandbox(&self, seed: &SandboxSeed) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.seed_sandbox(seed).await,
            Self::Postgres(pg) => pg.call(pg.sql.seed_sandbox(seed)).await,
        }
    }

    pub async fn customer(&self, username: &str) -> Result<Option<CustomerRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.customer(username).await,
            Self::Postgres(pg) => pg.call(pg.sql.customer(username)).await,
        }
    }

    pub async fn accounts_of(&self, owner: &str) -> Result<Vec<AccountRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.accounts_of(owner).await,
            Self::Postgres(pg) => pg.call(pg.sql.accounts_of(owner)).await,
        }
    }

    pub async fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError> {
        match self {
            Self::Sqlite(s) => s.account(id).await,
            Self::Postgres(pg) => pg.call(pg.sql.account(id)).await,
        }
    }

    /// One page of an account's transactions, oldest first, and how many match in all.
    pub async fn transactions(
        &self,
        q: &TransactionQuery,
    ) -> Result<(Vec<TransactionRecord>, i64), StoreError> {
        match self {
            Self::Sqlite(s) => s.transactions(q).await,
            Self::Postgres(pg) => pg.call(pg.sql.transactions(q)).await,
        }
    }
}
