//! Shared state in Redis, for several instances: every operation is one atomic Redis command
//! (`GETDEL`, `SET EXAT`, `INCR` in `MULTI`), so two instances racing for a single-use value
//! cannot both win.
//! The connection is made lazily and re-made after failures; while Redis is unreachable every
//! operation fails fast (1 s) and callers answer 503.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StateError;

/// Every live token revocation, in one sorted set (member: the token's `jti`, score: when the
/// token expires) beside the [`COMPLETE`] member that says they are all there. One key holds
/// both because Redis evicts whole keys: an eviction (under any `allkeys-*` policy), a flush or
/// a restart without persistence takes the marker with the revocations, and the loss is seen
/// as "unknown" (503, then reloaded from the database), never as "not revoked". The key has
/// no expiry, so `volatile-*` policies never take it. No `CONFIG GET` is needed, so this
/// holds on managed Redis services that forbid it.
const REVOCATIONS: &str = "revocations";
/// The member that says every live revocation is present; its score is +inf.
const COMPLETE: &str = "(complete)";

pub struct RedisState {
    conn: ConnectionManager,
    /// Prepended to every key, so several gateways (or test runs) can share one Redis.
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> StateError {
    StateError::Unavailable(e.to_string())
}

/// The value of an `expires_at:value` entry still live at `now`.
fn live(stored: Option<String>, now: i64) -> Option<String> {
    let (expires_at, value) = stored?
        .split_once(':')
        .map(|(e, v)| (e.to_string(), v.to_string()))?;
    (expires_at.parse::<i64>().ok()? > now).then_some(value)
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

    /// Adds a revocation, and forgets those of tokens that have expired anyway.
    pub async fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), StateError> {
        if expires_at <= now {
            return Ok(());
        }
        let key = self.key(REVOCATIONS);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(expires_at)
            .arg(jti)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({now}"))
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    /// Revoked or not, read in one command together with the marker that says the revocations
    /// are all here: if Redis lost them, the answer is "unknown", never "not revoked".
    pub async fn first_revoked(&self, keys: &[&str]) -> Result<Option<usize>, StateError> {
        let mut cmd = redis::cmd("ZMSCORE");
        cmd.arg(self.key(REVOCATIONS)).arg(COMPLETE).arg(keys);
        let scores: Vec<Option<f64>> = self.run(&cmd).await?;
        match scores.split_first() {
            Some((Some(_), revoked)) if revoked.len() == keys.len() => {
                Ok(revoked.iter().position(Option::is_some))
            }
            _ => Err(StateError::RevocationsNotLoaded),
        }
    }

    pub async fn revocations_loaded(&self) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("ZSCORE");
        cmd.arg(self.key(REVOCATIONS)).arg(COMPLETE);
        Ok(self.run::<Option<f64>>(&cmd).await?.is_some())
    }

    /// Writes every live revocation and the completeness marker in one command, so no reader
    /// ever sees the marker without all of them.
    pub async fn load_revocations(&self, live: &[(String, i64)]) -> Result<(), StateError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.key(REVOCATIONS));
        for (jti, expires_at) in live {
            cmd.arg(*expires_at).arg(jti);
        }
        cmd.arg("+inf").arg(COMPLETE);
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
        // The expiry travels with the value and is judged by the gateway's clock; the TTL only
        // lets Redis drop what nobody will ask for again.
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(format!("{expires_at}:{value}"))
            .arg("EXAT")
            .arg(expires_at);
        self.run::<()>(&cmd).await
    }

    pub async fn get(&self, key: &str, now: i64) -> Result<Option<String>, StateError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(key));
        Ok(live(self.run(&cmd).await?, now))
    }

    /// `GETDEL`: of several instances asking at once, exactly one gets the value.
    pub async fn take(&self, key: &str, now: i64) -> Result<Option<String>, StateError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(key));
        Ok(live(self.run(&cmd).await?, now))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_live_until_its_own_expiry_by_the_gateways_clock() {
        assert_eq!(live(Some("100:a:b".into()), 99), Some("a:b".into()));
        assert_eq!(live(Some("100:v".into()), 100), None);
        assert_eq!(live(Some("no expiry".into()), 0), None, "fails closed");
        assert_eq!(live(None, 0), None);
    }
}
