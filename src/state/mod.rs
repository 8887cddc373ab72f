//! Shared ephemeral state: token revocations, and short-lived entries with an expiry (pushed
//! authorization requests, authorization codes, customer sessions) that single-use things are
//! redeemed from atomically. `memory://` keeps it in this
//! process (the embedded default); a Redis backend shares it across instances.

pub mod memory;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("unsupported state url {0:?}: use memory://")]
    UnsupportedUrl(String),
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
}

impl SharedState {
    pub fn connect(url: &str) -> Result<Self, StateError> {
        match url {
            "memory://" | "memory:" => Ok(Self::Memory(memory::MemoryState::default())),
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
        }
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool, StateError> {
        match self {
            Self::Memory(m) => Ok(m.is_revoked(jti)),
        }
    }

    /// Stores `value` under `key` until `expires_at` unless a live entry holds the key already.
    pub async fn put_new(
        &self,
        key: &str,
        value: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StateError> {
        match self {
            Self::Memory(m) => Ok(m.put_new(key, value, expires_at, now)?),
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
        }
    }

    pub async fn get(&self, key: &str, now: i64) -> Result<Option<String>, StateError> {
        match self {
            Self::Memory(m) => Ok(m.get(key, now)),
        }
    }

    /// Removes and returns a live entry atomically: single-use things are redeemed with this.
    pub async fn take(&self, key: &str, now: i64) -> Result<Option<String>, StateError> {
        match self {
            Self::Memory(m) => Ok(m.take(key, now)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StateError> {
        match self {
            Self::Memory(m) => {
                m.delete(key);
                Ok(())
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            Self::Memory(_) => Ok(()),
        }
    }
}
