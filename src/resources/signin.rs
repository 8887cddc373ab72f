//! A sandbox bank customer signing in: throttling first, each attempt counted by an atomic
//! increment before any password is looked at (parallel guesses cannot all be checked), per
//! username and per peer address (which bounds the counters an unauthenticated peer can
//! create), then the password, checked in a bounded number of slots, one per peer at a time.

use std::collections::HashSet;
use std::net::IpAddr;

use super::sandbox;
use crate::digest::sha256_hex;
use crate::state::{SharedState, StateError};
use crate::store::{Store, StoreError};

/// Failed sign-ins for one username before it is paused, and for how long.
const MAX_FAILURES: u64 = 5;
const LOCKOUT_SECS: i64 = 900;
/// Sign-in attempts one peer address may make in that time, whatever the usernames.
const MAX_PEER_ATTEMPTS: u64 = 100;

/// Why a sign-in did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("too many sign-in attempts from this address")]
    PausedForPeer,
    #[error("too many failed attempts for this username")]
    Paused,
    #[error("the username and password did not match")]
    WrongPassword,
    /// This peer's previous attempt is still being checked.
    #[error("a sign-in from this address is still being checked")]
    Busy,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the password check failed: {0}")]
    Check(String),
}

/// One sign-in attempt.
pub struct Attempt<'a> {
    pub peer: Option<IpAddr>,
    pub username: &'a str,
    pub password: &'a str,
    /// Unix seconds, by the gateway's clock.
    pub now: i64,
}

/// Signs a customer in: returns the username they proved, or why not.
#[tracing::instrument(skip_all)]
pub async fn sign_in(
    state: &SharedState,
    store: &Store,
    checks: &PasswordChecks,
    attempt: Attempt<'_>,
) -> Result<String, SignInError> {
    let Attempt {
        peer,
        username,
        password,
        now,
    } = attempt;
    let peer_key = peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    let from_peer = state
        .incr(&format!("login-peer:{peer_key}"), now + LOCKOUT_SECS, now)
        .await?;
    if from_peer > MAX_PEER_ATTEMPTS {
        return Err(SignInError::PausedForPeer);
    }
    let failures_key = format!("login-failures:{}", sha256_hex(username));
    if state.incr(&failures_key, now + LOCKOUT_SECS, now).await? > MAX_FAILURES {
        return Err(SignInError::Paused);
    }
    match password_ok(store, checks, peer, username, password).await? {
        Some(true) => {
            state.delete(&failures_key).await?;
            Ok(username.to_string())
        }
        Some(false) => Err(SignInError::WrongPassword),
        None => Err(SignInError::Busy),
    }
}

/// Slots for password checks (each scrypt holds 32 MiB and tens of milliseconds of a core):
/// a few at a time in all, and at most one at a time per peer address.
pub struct PasswordChecks {
    slots: tokio::sync::Semaphore,
    busy: std::sync::Mutex<HashSet<IpAddr>>,
}

/// A peer's turn at the password check; it ends when dropped, also while still waiting.
struct Turn<'a> {
    peer: Option<IpAddr>,
    busy: &'a std::sync::Mutex<HashSet<IpAddr>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            self.busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&peer);
        }
    }
}

/// A held password-check slot.
pub struct Slot<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    _turn: Turn<'a>,
}

impl PasswordChecks {
    pub fn new(slots: usize) -> Self {
        Self {
            slots: tokio::sync::Semaphore::new(slots),
            busy: std::sync::Mutex::default(),
        }
    }

    /// A slot, waiting for one if all are taken; `None` if `peer` already has its turn.
    pub async fn acquire(&self, peer: Option<IpAddr>) -> Option<Slot<'_>> {
        if let Some(ip) = peer {
            let fresh = self
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(ip);
            if !fresh {
                return None;
            }
        }
        let turn = Turn {
            peer,
            busy: &self.busy,
        };
        let permit = self.slots.acquire().await.ok()?;
        Some(Slot {
            _permit: permit,
            _turn: turn,
        })
    }
}

/// Checks a customer's password; the same answer whether the user exists or not. `None`: the
/// peer already has a check in flight.
async fn password_ok(
    store: &Store,
    checks: &PasswordChecks,
    peer: Option<IpAddr>,
    username: &str,
    password: &str,
) -> Result<Option<bool>, SignInError> {
    // Nothing a username could be: refused before it reaches the database.
    if username.is_empty() || username.len() > 64 || username.chars().any(char::is_control) {
        return Ok(Some(false));
    }
    let Some(_slot) = checks.acquire(peer).await else {
        return Ok(None);
    };
    let stored = store.customer(username).await?.map(|c| c.password_hash);
    let password = password.to_string();
    let ok = tokio::task::spawn_blocking(move || match stored {
        Some(h) => sandbox::verify_password(&password, &h),
        None => {
            // Spend the same work on unknown users, so timing does not tell who exists.
            let _ = sandbox::hash_password(&password);
            false
        }
    })
    .await
    .map_err(|e| SignInError::Check(e.to_string()))?;
    Ok(Some(ok))
}
