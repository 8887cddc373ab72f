//! Shared state in Redis, for several instances: every operation is one atomic Redis command
//! (`GETDEL`, `SET EXAT`, `INCR` in `MULTI`), so two instances racing for a single-use value
//! cannot both win.
//! The connection is made lazily and re-made after failures; while Redis is unreachable every
//! operation fails fast (1 s) and callers answer 503.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StateError;

/// The key whose presence says every live revocation is in Redis. It has no expiry.
const LOADED: &str = "revocations-loaded";

pub struct RedisState {
    conn: ConnectionManager,
    /// Prepended to every key, so several gateways (or test runs) can share one Redis.
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl RedisState {
    /// `redis://[user:pass@]host:port[/db][?key_prefix=P]`; `rediss://` for TLS is refused until
    /// the build carries a Redis TLS stack.
    pub fn connect(url: &str) -> Result<Self, StateError> {
        let redacted = crate::config::redact_url(url);
        let mut parsed =
            reqwest::Url::parse(url).map_err(|_| StateError::UnsupportedUrl(redacted.clone()))?;
        if parsed.scheme() != "redis" {
            return Err(StateError::UnsupportedUrl(redacted));
        }
        let mut prefix = String::from("obgate:");
        let others: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "key_prefix" {
                    prefix = v.into_owned();
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        parsed.set_query(None);
        if !others.is_empty() {
            parsed.query_pairs_mut().extend_pairs(others);
        }
        let client = redis::Client::open(parsed.as_str())
            .map_err(|e| StateError::UnsupportedUrl(format!("{redacted}: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| StateError::UnsupportedUrl(format!("{redacted}: {e}")))?;
        Ok(Self { conn, prefix })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StateError> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(unavailable)
    }

    pub async fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), StateError> {
        if expires_at <= now {
            return Ok(());
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&format!("revoked:{jti}")))
            .arg(1)
            .arg("EXAT")
            .arg(expires_at);
        self.run::<()>(&cmd).await
    }

    /// Revoked or not, read together with the marker that says the revocations are all here:
    /// if Redis lost its data (a restart without persistence, an eviction, a flush), the answer
    /// is "unknown", never "not revoked".
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(self.key(LOADED))
            .arg(self.key(&format!("revoked:{jti}")));
        let (loaded, revoked): (Option<String>, Option<String>) = self.run(&cmd).await?;
        if loaded.is_none() {
            return Err(StateError::RevocationsNotLoaded);
        }
        Ok(revoked.is_some())
    }

    pub async fn revocations_loaded(&self) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.key(LOADED));
        Ok(self.run::<i64>(&cmd).await? > 0)
    }

    /// Marks the revocations as all present (after they were copied in from the database).
    pub async fn mark_revocations_loaded(&self) -> Result<(), StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(LOADED)).arg(1);
        self.run::<()>(&cmd).await
    }

    pub async fn put(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        if expires_at <= now {
            return self.delete(key).await;
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value)
            .arg("EXAT")
            .arg(expires_at);
        self.run::<()>(&cmd).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<String>, StateError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        self.run(&cmd).await
    }

    /// `GETDEL`: of several instances asking at once, exactly one gets the value.
    pub async fn take(&self, key: &str) -> Result<Option<String>, StateError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(key));
        self.run(&cmd).await
    }

    /// `INCR`, with the key's expiry set when it is created: one counter for every instance.
    pub async fn incr(&self, key: &str, expires_at: i64) -> Result<u64, StateError> {
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("NX")
            .arg("EXAT")
            .arg(expires_at)
            .ignore()
            .cmd("INCR")
            .arg(&key);
        let mut conn = self.conn.clone();
        let (n,): (u64,) = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(n)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        self.run::<i64>(&cmd).await.map(|_| ())
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }
}
