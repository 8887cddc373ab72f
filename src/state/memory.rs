//! In-process state for a single instance.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Live short-lived entries are capped: past this, new ones are refused (callers answer 503)
/// rather than letting unauthenticated traffic grow the process without bound.
pub const MAX_ENTRIES: usize = 200_000;
/// Expired entries are first swept when the map reaches this size; after each sweep the next
/// one waits until the map has doubled, so sweeping costs O(1) per insert on average.
const SWEEP_AT: usize = 4096;

#[derive(Default)]
pub struct MemoryState {
    revoked: Mutex<Revocations>,
    /// Short-lived entries by key: `(value, expires_at)`.
    entries: Mutex<Entries>,
}

/// Revoked tokens by `jti`, with their expiry; `complete` once the database's were loaded
/// (until then nobody can say a token is not revoked).
#[derive(Default)]
struct Revocations {
    map: HashMap<String, i64>,
    complete: bool,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, (String, i64)>,
    sweep_at: usize,
}

impl MemoryState {
    pub fn revoke(&self, jti: &str, expires_at: i64, now: i64) {
        let mut r = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget revocations of tokens that have expired anyway, so the map stays small.
        if r.map.len() > 1024 {
            r.map.retain(|_, exp| *exp > now);
        }
        r.map.insert(jti.to_string(), expires_at);
    }

    /// Whether `jti` is revoked, or `None` while the revocations are not all loaded.
    pub fn first_revoked(&self, keys: &[&str]) -> Option<Option<usize>> {
        let r = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        r.complete
            .then(|| keys.iter().position(|k| r.map.contains_key(*k)))
    }

    pub fn revocations_loaded(&self) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .complete
    }

    pub fn load_revocations(&self, live: &[(String, i64)], now: i64) {
        let mut r = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        r.map.extend(
            live.iter()
                .filter(|(_, exp)| *exp > now)
                .map(|(jti, exp)| (jti.clone(), *exp)),
        );
        r.complete = true;
    }

    /// Stores `value` under `key` until `expires_at`, replacing what was there.
    pub fn put(&self, key: &str, value: &str, expires_at: i64, now: i64) -> Result<(), Full> {
        let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !e.map.contains_key(key) {
            e.make_room(now)?;
        }
        e.map
            .insert(key.to_string(), (value.to_string(), expires_at));
        Ok(())
    }

    pub fn get(&self, key: &str, now: i64) -> Option<String> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone())
    }

    /// Removes and returns a live entry: of two callers racing, exactly one gets it.
    pub fn take(&self, key: &str, now: i64) -> Option<String> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .remove(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v)
    }

    /// Adds one to the counter `key` (created at 0, living until `expires_at`) and returns it.
    pub fn incr(&self, key: &str, expires_at: i64, now: i64) -> Result<u64, Full> {
        let mut e = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let live = e
            .map
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .and_then(|(v, exp)| Some((v.parse::<u64>().ok()?, *exp)));
        let (count, exp) = match live {
            Some((count, exp)) => (count + 1, exp),
            None => {
                e.make_room(now)?;
                (1, expires_at)
            }
        };
        e.map.insert(key.to_string(), (count.to_string(), exp));
        Ok(count)
    }

    pub fn delete(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .remove(key);
    }
}

/// The in-process store is at its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Entries {
    fn make_room(&mut self, now: i64) -> Result<(), Full> {
        if self.map.len() >= self.sweep_at.max(SWEEP_AT) {
            self.map.retain(|_, (_, exp)| *exp > now);
            self.sweep_at = (2 * self.map.len()).max(SWEEP_AT);
        }
        if self.map.len() >= MAX_ENTRIES {
            return Err(Full);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_tokens_are_remembered_and_expired_ones_pruned() {
        let s = MemoryState::default();
        s.load_revocations(&[], 0);
        s.revoke("a", 100, 0);
        assert_eq!(s.first_revoked(&["a"]), Some(Some(0)));
        assert_eq!(s.first_revoked(&["b"]), Some(None));
        assert_eq!(
            s.first_revoked(&["b", "a"]),
            Some(Some(1)),
            "the one that is revoked"
        );
        for i in 0..1100 {
            s.revoke(&format!("t{i}"), 50, 0);
        }
        s.revoke("late", 500, 200);
        assert_eq!(s.first_revoked(&["t0"]), Some(None));
        assert_eq!(s.first_revoked(&["late"]), Some(Some(0)));
    }

    #[test]
    fn no_token_is_called_unrevoked_before_the_revocations_are_loaded() {
        let s = MemoryState::default();
        // A first load that failed (the database was away at start) leaves this unknown.
        assert_eq!(s.first_revoked(&["anything"]), None);
        assert!(!s.revocations_loaded());
        s.revoke("fresh", 100, 0);
        assert_eq!(
            s.first_revoked(&["fresh"]),
            None,
            "one new revocation is not all of them"
        );
        s.load_revocations(&[("old".into(), 100), ("dead".into(), 5)], 10);
        assert!(s.revocations_loaded());
        assert_eq!(s.first_revoked(&["old"]), Some(Some(0)));
        assert_eq!(s.first_revoked(&["fresh"]), Some(Some(0)));
        assert_eq!(s.first_revoked(&["anything"]), Some(None));
    }

    #[test]
    fn entries_are_taken_once_and_expire() {
        let s = MemoryState::default();
        assert_eq!(s.put("k", "v", 100, 0), Ok(()));
        assert_eq!(s.get("k", 50), Some("v".into()));
        assert_eq!(s.take("k", 50), Some("v".into()));
        assert_eq!(s.take("k", 50), None);
        assert_eq!(s.put("old", "v", 10, 0), Ok(()));
        assert_eq!(s.get("old", 10), None);
        assert_eq!(s.take("old", 20), None);
        assert_eq!(s.put("old", "new", 30, 20), Ok(()));
        assert_eq!(s.take("old", 20), Some("new".into()));
    }

    #[test]
    fn counters_count_within_their_window_and_restart_after_it() {
        let s = MemoryState::default();
        assert_eq!(s.incr("c", 60, 0), Ok(1));
        assert_eq!(s.incr("c", 120, 30), Ok(2), "the window's end stays");
        assert_eq!(s.incr("c", 120, 60), Ok(1), "a new window");
    }

    #[test]
    fn the_entry_map_is_swept_and_capped() {
        let s = MemoryState::default();
        for i in 0..SWEEP_AT {
            assert_eq!(s.put(&format!("dead{i}"), "v", 5, 0), Ok(()));
        }
        // Past the sweep size, expired entries make room for new ones.
        assert_eq!(s.put("live", "v", 100, 10), Ok(()));
        assert_eq!(s.entries.lock().map(|e| e.map.len()).unwrap_or(0), 1);
        let mut full = Ok(());
        for i in 0..MAX_ENTRIES {
            full = s.put(&format!("k{i}"), "v", 100, 10);
            if full.is_err() {
                break;
            }
        }
        assert_eq!(full, Err(Full));
    }
}
