//! Shared ephemeral state: token revocations, and short-lived entries with an expiry (pushed
//! authorization requests, authorization codes, customer sessions, counters) that single-use
//! things are redeemed from atomically. `memory://` keeps it in this process (the embedded
//! default); `redis://` shares it across instances.

pub mod memory;
pub mod redis;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("unsupported state url {0:?}: use memory:// or redis://HOST:PORT")]
    UnsupportedUrl(String),
    #[error("shared state (Redis) is unreachable: {0}")]
    Unavailable(String),
    #[error("shared state has lost its revocations; they are being reloaded from the database")]
    RevocationsNotLoaded,
    #[error(
        "shared state is full ({} live entries); refusing new ones",
        memory::MAX_ENTRIES
    )]
    Full,
}

impl From<memory::Full> for StateError {
    fn from(_: memory::Full) -> Self {
        Self::Full
    }
}

/// The state backend chosen by `state.url`.
pub enum SharedState {
    Memory(memory::MemoryState),
    Redis(redis::RedisState),
}

impl SharedState {
    pub fn connect(url: &str) -> Result<Self, StateError> {
        match url {
            "memory://" | "memory:" => Ok(Self::Memory(memory::MemoryState::default())),
            redis if redis.starts_with("redis://") => {
                Ok(Self::Redis(redis::RedisState::connect(redis)?))
            }
            other => Err(StateError::UnsupportedUrl(crate::config::redact_url(other))),
        }
    }

    /// Marks `jti` revoked until `expires_at` (unix seconds), after which the token is dead anyway.
    pub async fn revoke(&self, jti: &str, expires_at: i64, now: i64) -> Result<(), StateError> {
        match self {
            Self::Memory(m) => {
                m.revoke(jti, expires_at, now);
                Ok(())
            }
            Self::Redis(r) => r.revoke(jti, expires_at, now).await,
        }
    }

    /// Whether `jti` is revoked; "unknown" (an error) until every live revocation is loaded,
    /// never "not revoked".
    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StateError> {
        Ok(self.first_revoked(&[jti]).await?.is_some())
    }

    /// Which of `keys` is revoked first, if any, in one lookup (one round trip to Redis); as
    /// with [`Self::is_revoked`], "unknown" until every live revocation is loaded.
    pub async fn first_revoked(&self, keys: &[&str]) -> Result<Option<usize>, StateError> {
        match self {
            Self::Memory(m) => m
                .first_revoked(keys)
                .ok_or(StateError::RevocationsNotLoaded),
            Self::Redis(r) => r.first_revoked(keys).await,
        }
    }

    /// Stores `value` under `key` until `expires_at`, replacing what was there.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StateError> {
        match self {
            Self::Memory(m) => Ok(m.put(key, value, expires_at, now)?),
            Self::Redis(r) => r.put(key, value, expires_at, now).await,
        }
    }

    pub async fn get(&self, key: &str, now: i64) -> Result<Option<String>, StateError> {
        match self {
            Self::Memory(m) => Ok(m.get(key, now)),
            Self::Redis(r) => r.get(key, now).await,
        }
    }

    /// Removes and returns a live entry atomically: single-use things are redeemed with this.
    pub async fn take(&self, key: &str, now: i64) -> Result<Option<String>, StateError> {
        match self {
            Self::Memory(m) => Ok(m.take(key, now)),
            Self::Redis(r) => r.take(key, now).await,
        }
    }

    /// Counts one more under `key` until `expires_at` (a fixed window); returns the count.
    pub async fn incr(&self, key: &str, expires_at: i64, now: i64) -> Result<u64, StateError> {
        match self {
            Self::Memory(m) => Ok(m.incr(key, expires_at, now)?),
            Self::Redis(r) => r.incr(key, expires_at).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        match self {
            Self::Memory(m) => {
                m.delete(key);
                Ok(())
            }
            Self::Redis(r) => r.delete(key).await,
        }
    }

    /// Whether every live revocation is present.
    pub async fn revocations_loaded(&self) -> Result<bool, StateError> {
        match self {
            Self::Memory(m) => Ok(m.revocations_loaded()),
            Self::Redis(r) => r.revocations_loaded().await,
        }
    }

    /// Adds every live revocation (`(jti, expires_at)`, from the database) and marks them
    /// complete, at once.
    pub async fn load_revocations(
        &self,
        live: &[(String, i64)],
        now: i64,
    ) -> Result<(), StateError> {
        match self {
            Self::Memory(m) => {
                m.load_revocations(live, now);
                Ok(())
            }
            Self::Redis(r) => r.load_revocations(live).await,
        }
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping().await,
        }
    }
}
