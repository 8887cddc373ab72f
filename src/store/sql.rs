//! What the SQLite and PostgreSQL backends share: [`SqlStore`], one implementation of the
//! storage calls generic over the sqlx database, written once per aggregate (`clients.rs`,
//! `consents.rs`, `bank.rs`, `grants.rs`, `payments.rs`, `revocations.rs`, `audit.rs`). Each
//! backend supplies only what its dialect says differently, as a [`Dialect`].
//!
//! Every `impl<DB> SqlStore<DB>` block names the same bounds ([`Dialect`] cannot carry them:
//! Rust does not yet imply a trait's where-clauses): the backend's connections execute
//! statements, and text, integers and booleans bind and decode.

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, IntoArguments, Pool, Transaction};

use super::StoreError;

/// What one backend's SQL says differently.
pub trait Dialect: Database<Arguments: IntoArguments<Self>> {
    /// A client with its active certificates' thumbprints (`thumbprints`, joined by `,`), their
    /// issuers' keys (`issuer_keys`, by `,`) and, for certificates registered before issuer
    /// keys were recorded, their issuers' DNs (`issuers`, by [`ISSUER_SEPARATOR`]).
    const CLIENT_SELECT: &'static str;

    /// Moves a consent to `$1` (at `$2`) from any status in the JSON array `$4`.
    const TRANSITION_CONSENT: &'static str;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// A transaction holding the audit chain's write lock from its first statement: appends
    /// from every process sharing the database are serialised, so the chain stays one chain.
    fn begin_audit(
        conn: &mut PoolConnection<Self>,
    ) -> impl Future<Output = Result<Transaction<'_, Self>, StoreError>> + Send;
}

/// The storage calls over one backend's connection pool.
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
}

impl<DB: Database> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Separates issuer DNs in one column: the ASCII unit separator, which DNs do not contain.
pub(super) const ISSUER_SEPARATOR: char = '\u{1f}';

/// Whether `key` could be stored at all: PostgreSQL text cannot hold NUL, so no stored key
/// contains one and a lookup by such a key finds nothing (instead of a database error), on
/// both backends alike.
pub(super) fn storable(key: &str) -> bool {
    !key.contains('\0')
}
