//! The last access token each session was given, in memory, so a device
//! whose token is still valid gets it while the database is unreachable
//! (a PostgreSQL restart or fail-over must not log a fleet out). Bounded:
//! when full, expired entries go first, and a new session is not cached
//! rather than growing the map.

use std::collections::HashMap;
use std::sync::Mutex;

use kit::secret::Secret;

/// Sessions remembered at most.
const MAX_ENTRIES: usize = 100_000;

/// One session's last answer.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The access token given.
    pub access: Secret,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
    /// The session's product id (for the client-certificate check).
    pub product_id: String,
    /// The session's serial (for the client-certificate check).
    pub dsn: String,
}

/// The cache.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: Mutex<HashMap<String, Cached>>,
}

impl TokenCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        // A map of plain values: nothing a panic could leave half-done.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember what session `id` was given at `now`.
    pub fn put(&self, id: &str, entry: Cached, now: u64) {
        let mut map = self.map();
        if map.len() >= MAX_ENTRIES && !map.contains_key(id) {
            map.retain(|_, c| c.expires_at > now);
            if map.len() >= MAX_ENTRIES {
                return;
            }
        }
        map.insert(id.to_string(), entry);
    }

    /// Session `id`'s last token, if still valid at `now`.
    pub fn get(&self, id: &str, now: u64) -> Option<Cached> {
        self.map().get(id).filter(|c| c.expires_at > now).cloned()
    }

    /// Forget session `id` (ended).
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }
}
