//! Shared ephemeral state: token revocations now; single-use codes, replay and idempotency
//! windows and rate limits as the features that need them arrive. `memory://` keeps it in this
//! process (the embedded default); a Redis backend shares it across instances.

pub mod memory;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("unsupported state url {0:?}: use memory://")]
    UnsupportedUrl(String),
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

    pub async fn ping(&self) -> Result<(), StateError> {
        match self {
            Self::Memory(_) => Ok(()),
        }
    }
}
