//! API keys as the server knows them between requests: resolved keys cached briefly, when each
//! was last marked used, and the event streams each holds open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cp_store::keys::KeyPrincipal;
use dashmap::DashMap;
use uuid::Uuid;

/// How long a resolved key is trusted before it is looked up again. Revocations and setting
/// changes made through this process clear the cache at once; other replicas and the CLI
/// take effect within this delay.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// How often `last_used_at` is written per key (it is informational; per-request writes would
/// turn every read into a write).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Keys found in the database, cached briefly. Unknown keys are not cached (that would let a
/// flood of random keys grow the map); malformed ones never reach the database, and well-formed
/// unknown ones cost one indexed lookup and count against their address's limit.
#[derive(Default)]
pub struct KeyCache {
    entries: DashMap<String, (Instant, KeyPrincipal)>,
    touched: DashMap<Uuid, Instant>,
    /// Whether a key is still usable, by id, for long requests that outlive their check.
    usable: DashMap<Uuid, (Instant, bool)>,
    /// Open event streams per key.
    streams: DashMap<Uuid, usize>,
}

/// Most event streams one key may hold open at once.
pub const MAX_STREAMS_PER_KEY: usize = 100;

/// An open stream's place in its key's count; given back when dropped.
pub struct StreamSlot {
    keys: Arc<KeyCache>,
    key: Uuid,
}

impl StreamSlot {
    /// The key whose stream this is.
    pub fn key(&self) -> Uuid {
        self.key
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.keys.streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.keys.streams.remove_if(&self.key, |_, n| *n == 0);
    }
}

impl KeyCache {
    /// Forgets everything (after a revocation or a settings change).
    pub fn clear(&self) {
        self.entries.clear();
        self.usable.clear();
    }

    /// A place for one more stream of `key`, unless it holds [`MAX_STREAMS_PER_KEY`] already.
    pub fn open_stream(self: &Arc<Self>, key: Uuid) -> Option<StreamSlot> {
        let mut n = self.streams.entry(key).or_insert(0);
        if *n >= MAX_STREAMS_PER_KEY {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            keys: self.clone(),
            key,
        })
    }

    /// Whether the key is still neither revoked nor expired, read at most once per
    /// [`CACHE_TTL`] per key (streams ask every few seconds).
    pub async fn still_usable(&self, store: &cp_store::Store, org: &str, key: Uuid) -> bool {
        if let Some(hit) = self.usable.get(&key)
            && hit.0.elapsed() < CACHE_TTL
        {
            return hit.1;
        }
        let usable = match store.keys(org).get(key).await {
            Ok(k) => k.is_usable(cp_types::now()),
            Err(cp_store::StoreError::NotFound) => false,
            // The database is away: keep the stream; the next check decides.
            Err(_) => return true,
        };
        self.usable.insert(key, (Instant::now(), usable));
        usable
    }

    /// Keeps a key found in the database for [`CACHE_TTL`].
    pub fn remember(&self, token: &str, key: KeyPrincipal) {
        self.entries.insert(token.to_owned(), (Instant::now(), key));
    }

    /// A key found in the database less than [`CACHE_TTL`] ago.
    pub fn get(&self, token: &str) -> Option<KeyPrincipal> {
        let entry = self.entries.get(token)?;
        (entry.0.elapsed() < CACHE_TTL).then(|| entry.1.clone())
    }

    /// Whether `last_used_at` should be written now for this key.
    pub fn should_touch(&self, key_id: Uuid) -> bool {
        let now = Instant::now();
        let mut due = false;
        self.touched
            .entry(key_id)
            .and_modify(|last| {
                if now.duration_since(*last) >= TOUCH_EVERY {
                    *last = now;
                    due = true;
                }
            })
            .or_insert_with(|| {
                due = true;
                now
            });
        due
    }

    /// Drops expired entries so memory follows active keys.
    pub fn sweep(&self) {
        self.entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        self.usable.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        self.touched.retain(|_, at| at.elapsed() < TOUCH_EVERY);
    }
}
