//! In-process state for a single instance.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

#[derive(Default)]
pub struct MemoryState {
    revoked: Mutex<HashMap<String, i64>>,
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
}
