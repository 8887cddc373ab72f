//! In-process state for a single instance.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Default)]
pub struct MemoryState {
    revoked: Mutex<HashMap<String, i64>>,
    /// Short-lived entries by key: `(value, expires_at)`.
    entries: Mutex<HashMap<String, (String, i64)>>,
}

impl MemoryState {
    pub fn revoke(&self, jti: &str, expires_at: i64, now: i64) {
        let mut map = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget revocations of tokens that have expired anyway, so the map stays small.
        if map.len() > 1024 {
            map.retain(|_, exp| *exp > now);
        }
        map.insert(jti.to_string(), expires_at);
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(jti)
    }

    /// Stores `value` under `key` until `expires_at`; false (and nothing changed) if a live
    /// entry already holds the key.
    pub fn put_new(&self, key: &str, value: &str, expires_at: i64, now: i64) -> bool {
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 4096 {
            map.retain(|_, (_, exp)| *exp > now);
        }
        if map.get(key).is_some_and(|(_, exp)| *exp > now) {
            return false;
        }
        map.insert(key.to_string(), (value.to_string(), expires_at));
        true
    }

    /// Stores `value` under `key` until `expires_at`, replacing what was there.
    pub fn put(&self, key: &str, value: &str, expires_at: i64) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_string(), (value.to_string(), expires_at));
    }

    pub fn get(&self, key: &str, now: i64) -> Option<String> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v.clone())
    }

    /// Removes and returns a live entry: of two callers racing, exactly one gets it.
    pub fn take(&self, key: &str, now: i64) -> Option<String> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
            .filter(|(_, exp)| *exp > now)
            .map(|(v, _)| v)
    }

    pub fn delete(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_tokens_are_remembered_and_expired_ones_pruned() {
        let s = MemoryState::default();
        s.revoke("a", 100, 0);
        assert!(s.is_revoked("a"));
        assert!(!s.is_revoked("b"));
        for i in 0..1100 {
            s.revoke(&format!("t{i}"), 50, 0);
        }
        s.revoke("late", 500, 200);
        assert!(!s.is_revoked("t0"));
        assert!(s.is_revoked("late"));
    }

    #[test]
    fn entries_are_taken_once_and_expire() {
        let s = MemoryState::default();
        assert!(s.put_new("k", "v", 100, 0));
        assert!(!s.put_new("k", "w", 100, 0));
        assert_eq!(s.get("k", 50), Some("v".into()));
        assert_eq!(s.take("k", 50), Some("v".into()));
        assert_eq!(s.take("k", 50), None);
        s.put("old", "v", 10);
        assert_eq!(s.get("old", 10), None);
        assert_eq!(s.take("old", 20), None);
        assert!(s.put_new("old", "new", 30, 20));
    }
}
