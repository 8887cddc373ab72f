//! The PostgreSQL backend, for production and several instances. `obgate migrate` applies the
//! schema; `obgate serve` refuses a database whose schema is behind or ahead of this binary.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::breaker::{Breaker, Check};
use super::sql::{Dialect, SqlStore};
use super::{Migrations, StoreError, StoreFailure};

impl Dialect for Postgres {
    const CLIENT_SELECT: &str = "SELECT c.client_id, c.name, c.status, c.roles, c.auth_method, \
     c.subject_dn, c.redirect_uris, c.jwks, c.created_at, \
     COALESCE((SELECT string_agg(thumbprint, ',') FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active'), '') AS thumbprints, \
     COALESCE((SELECT string_agg(issuer, chr(31)) FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active' \
               AND cc.issuer_key IS NULL), '') AS issuers, \
     COALESCE((SELECT string_agg(issuer_key, ',') FROM client_certificates cc \
               WHERE cc.client_id = c.client_id AND cc.status = 'active'), '') AS issuer_keys \
     FROM clients c";

    const TRANSITION_CONSENT: &str = "UPDATE consents SET status = $1, status_updated_at = $2 \
     WHERE consent_id = $3 AND status IN (SELECT jsonb_array_elements_text(CAST($4 AS jsonb)))";

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// An advisory lock needs no table privilege beyond INSERT (the log can be append-only for
    /// the gateway's role); waiting for it is bounded, so a stuck instance cannot hold every
    /// other one's audit writer.
    async fn begin_audit(
        conn: &mut PoolConnection<Self>,
    ) -> Result<Transaction<'_, Self>, StoreError> {
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        sqlx::query("SET LOCAL lock_timeout = '2s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// The advisory lock key that serialises audit appends ("obgate" in ASCII).
const AUDIT_LOCK: i64 = 0x6f62_6761_7465;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The production backend: the shared statements behind a breaker, each call bounded.
#[derive(Clone)]
pub struct PgStore {
    pub(super) sql: SqlStore<Postgres>,
    breaker: Arc<Breaker>,
}

/// After the database was found unreachable, how long calls fail at once before one tries it
/// again (without this each would wait out the pool's acquire timeout).
const FAIL_FAST_FOR: Duration = Duration::from_millis(500);

/// How long the probe's `SELECT 1` may take before the database counts as still away. Nobody
/// waits on the probe, so this can allow for a new connection's TLS and authentication.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections in the pool: a pool that times out with fewer open could not open one.
const MAX_CONNECTIONS: u32 = 16;

/// How long a call waits for a connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest a call may take. Its parts are bounded (a connection 2 s, the audit lock 2 s,
/// each statement 10 s on the server), so a call still unanswered after this waits on a host
/// that has gone silent (TCP would take minutes to say so).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// With every connection taken, how long the database must have answered nothing for a pool
/// timeout to count as an outage: longer than a statement may run.
const SILENT_FOR: Duration = Duration::from_secs(12);

/// Reports the probe's answer when dropped; a probe that never answered (its task dropped with
/// the runtime it ran on) counts as failed, so the breaker does not wait for it for ever and
/// the next call probes again.
struct ProbeGuard {
    breaker: Arc<Breaker>,
    answered: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.breaker.probed(self.answered);
    }
}

impl PgStore {
    /// One storage call: refused at once while the breaker is open, bounded by
    /// [`CALL_TIMEOUT`], and its outcome shown to the breaker.
    pub(super) async fn call<T, E>(&self, call: impl Future<Output = Result<T, E>>) -> Result<T, E>
    where
        E: From<StoreError> + StoreFailure,
    {
        self.admit()?;
        let result = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(StoreError::NoAnswer.into()));
        self.observe(result.as_ref().err().and_then(StoreFailure::store_error));
        result
    }

    /// Whether to call the database now (see [`Breaker`]). The probe is a `SELECT 1` in the
    /// background, bounded by [`PROBE_TIMEOUT`], so no caller waits on a database still away.
    fn admit(&self) -> Result<(), StoreError> {
        match self.breaker.check() {
            Check::Closed => Ok(()),
            Check::Open => Err(StoreError::Unreachable),
            Check::ProbeDue => {
                let pool = self.sql.pool.clone();
                let mut guard = ProbeGuard {
                    breaker: Arc::clone(&self.breaker),
                    answered: false,
                };
                tokio::spawn(async move {
                    let ping = sqlx::query("SELECT 1").execute(&pool);
                    guard.answered = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            !outage(&StoreError::from(e), &pool, guard.breaker.silent_for())
                        }
                        Err(_) => false,
                    };
                    // Dropping the guard reports the answer.
                    drop(guard);
                });
                Err(StoreError::Unreachable)
            }
        }
    }

    /// After a call: trips the breaker if its error says the database is away.
    fn observe(&self, error: Option<&StoreError>) {
        match error {
            None => self.breaker.answered(),
            Some(e) if outage(e, &self.sql.pool, self.breaker.silent_for()) => self.breaker.trip(),
            // The server answered, if only to refuse.
            Some(StoreError::Db(sqlx::Error::Database(_))) => self.breaker.answered(),
            Some(_) => {}
        }
    }

    /// Connects to a `postgres://` URL. With [`Migrations::Apply`] the schema is brought up to
    /// date; with [`Migrations::RequireCurrent`] a schema that is behind or ahead is refused.
    pub async fn connect(url: &str, migrations: Migrations) -> Result<Self, StoreError> {
        // No statement, and no transaction left open by a stalled instance, may hang for ever.
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(crate::config::redact_url(url)))?
            .options([
                ("statement_timeout", "10s"),
                ("idle_in_transaction_session_timeout", "10s"),
            ]);
        let pool: PgPool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        match migrations {
            Migrations::Apply => MIGRATOR.run(&pool).await.map_err(super::migrate_error)?,
            Migrations::RequireCurrent => require_current(&pool).await?,
        }
        Ok(Self {
            sql: SqlStore { pool },
            breaker: Arc::new(Breaker::new(FAIL_FAST_FOR)),
        })
    }
}

/// Whether `e` says the database is away, as opposed to busy or refusing one statement: only
/// then may calls fail fast. A query cancelled by its timeout, a full disk or a pool whose
/// connections are all busy answering is not an outage; `silent_for` is how long since the
/// database last answered a call.
fn outage(e: &StoreError, pool: &PgPool, silent_for: Duration) -> bool {
    match e {
        StoreError::Db(sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed)
        | StoreError::NoAnswer => true,
        // sqlx retries a refused connection until the acquire timeout, then says this. With
        // every connection taken it is an outage only if none has been answered meanwhile (a
        // host gone silent holds them all).
        StoreError::Db(sqlx::Error::PoolTimedOut) => {
            pool.size() < MAX_CONNECTIONS || silent_for >= SILENT_FOR
        }
        // Connection exceptions (08), the server shutting down or starting (57P01-57P03),
        // too many connections (53300).
        StoreError::Db(sqlx::Error::Database(e)) => e.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// The applied migrations must be exactly the ones this binary knows.
async fn require_current(pool: &PgPool) -> Result<(), StoreError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)")
            .fetch_one(pool)
            .await?;
    let applied: Vec<i64> = if exists.is_some() {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    super::check_versions(&applied, &known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_dropped_unanswered_counts_as_failed_so_the_next_call_probes_again() {
        const WINDOW: Duration = Duration::from_millis(5);
        let breaker = Arc::new(Breaker::new(WINDOW));
        breaker.trip();
        std::thread::sleep(WINDOW);
        assert_eq!(breaker.check(), Check::ProbeDue);
        drop(ProbeGuard {
            breaker: Arc::clone(&breaker),
            answered: false,
        });
        std::thread::sleep(WINDOW);
        assert_eq!(breaker.check(), Check::ProbeDue, "not waiting for ever");
        drop(ProbeGuard {
            breaker: Arc::clone(&breaker),
            answered: true,
        });
        assert_eq!(breaker.check(), Check::Closed);
    }

    #[tokio::test]
    async fn only_an_unreachable_database_is_an_outage() -> Result<(), StoreError> {
        // Nothing listens here; the pool connects lazily, so it holds no connection.
        let pool = PgPoolOptions::new().connect_lazy("postgres://obgate@127.0.0.1:9/none")?;
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        const ZERO: Duration = Duration::ZERO;
        assert!(outage(
            &StoreError::Db(sqlx::Error::Io(refused)),
            &pool,
            ZERO
        ));
        assert!(
            outage(&StoreError::Db(sqlx::Error::PoolTimedOut), &pool, ZERO),
            "timed out with room in the pool: no connection could be opened"
        );
        assert!(!outage(
            &StoreError::Db(sqlx::Error::RowNotFound),
            &pool,
            ZERO
        ));
        assert!(!outage(&StoreError::Corrupt("x".into()), &pool, ZERO));
        assert!(!outage(&StoreError::Conflict("x".into()), &pool, ZERO));
        assert!(outage(&StoreError::NoAnswer, &pool, ZERO));
        Ok(())
    }
}
