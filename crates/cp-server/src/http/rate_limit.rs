//! Fixed one-minute windows aligned to the UTC minute, per API key (or per client address
//! for requests without a valid key). On PostgreSQL a key's window is shared by every
//! replica: each takes a slice of the limit at a time from the database (one statement, made
//! by one request while the key's others wait) and counts it down in memory, so together they
//! never allow more than the limit, and at most a slice per replica less. Addresses are
//! counted by each process.
//!
//! A plain counter per window is what API §1 specifies (and what `X-RateLimit-Reset` can
//! describe exactly); a GCRA limiter such as governor would smooth bursts differently from
//! the documented contract, so it is not used here.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use cp_store::Store;
use dashmap::DashMap;
use uuid::Uuid;

/// The slice of a key's limit a replica takes at a time: a fiftieth, so what other replicas
/// took and have not used yet costs a key at most 2% of its limit per replica.
fn slice(limit: u64) -> u64 {
    (limit / 50).max(1)
}

/// Who is being metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    Key(Uuid),
    Addr(IpAddr),
    /// A job's inbound webhook path.
    Hook(Uuid),
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds when the window resets.
    pub reset: u64,
    /// Seconds until then (for `Retry-After`).
    pub retry_after: u64,
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
        if !self.allowed {
            headers.insert("retry-after", HeaderValue::from(self.retry_after.max(1)));
        }
    }
}

#[derive(Default)]
pub struct RateLimiter {
    windows: DashMap<Meter, (u64, u64)>,
    /// Keys' windows taken from the database's shared count (PostgreSQL).
    shared: DashMap<Uuid, Arc<Shared>>,
}

/// One key's share of its current window on this replica.
struct Shared {
    counts: parking_lot::Mutex<Slice>,
    /// Held by the one request that takes the next slice from the database.
    taking: tokio::sync::Mutex<()>,
}

impl Shared {
    fn at(window: u64) -> Shared {
        Shared {
            counts: parking_lot::Mutex::new(Slice {
                window,
                ..Slice::default()
            }),
            taking: tokio::sync::Mutex::new(()),
        }
    }
}

/// How long a replica that could not reach the shared count counts alone before it tries
/// again.
const ALONE_FOR_SECS: u64 = 5;

#[derive(Default, Clone, Copy, Debug)]
struct Slice {
    window: u64,
    /// Requests this replica allowed in the window.
    used: u64,
    /// Requests it took from the shared count.
    reserved: u64,
    /// Requests every replica took, as of this replica's last slice.
    taken: u64,
    /// The shared count reached the limit: refused from memory until the window turns.
    spent: bool,
    /// Until then (Unix seconds) the database did not answer: this replica counts alone.
    alone_until: u64,
}

/// What the slice says about one request, before the database is asked.
enum Local {
    Allowed(u64),
    Refused,
    /// The slice is used up: take another from the shared count.
    Ask,
}

impl Slice {
    /// The window a request at `window` counts in: one that read the clock just before the
    /// minute turned counts in the new one, so the slice never goes back.
    fn enter(&mut self, window: u64) -> u64 {
        if window > self.window {
            *self = Slice {
                window,
                ..Slice::default()
            };
        }
        self.window
    }

    fn take_one(&mut self, limit: u64, now_unix: u64) -> Local {
        if self.used < self.reserved {
            self.used += 1;
            return Local::Allowed(self.reserved - self.used);
        }
        if self.spent {
            return Local::Refused;
        }
        if now_unix < self.alone_until {
            // What this replica allowed counts; what the others did cannot be known.
            if self.used < limit {
                self.used += 1;
                self.reserved = self.used;
                return Local::Allowed(limit - self.used);
            }
            return Local::Refused;
        }
        Local::Ask
    }
}

impl RateLimiter {
    /// Counts a request of API key `key` at `now_unix` against `limit` per minute: against
    /// the count all replicas share when the store has one, in memory otherwise.
    pub async fn check_key(&self, store: &Store, key: Uuid, limit: u64, now_unix: u64) -> Decision {
        if !store.shares_rate_windows() {
            return self.check(Meter::Key(key), limit, now_unix);
        }
        let shared = self
            .shared
            .entry(key)
            .or_insert_with(|| Arc::new(Shared::at(now_unix / 60)))
            .clone();
        let decide = |window: u64, allowed: Option<u64>, taken: u64| {
            let reset = (window + 1) * 60;
            Decision {
                allowed: allowed.is_some(),
                limit,
                remaining: (limit.saturating_sub(taken) + allowed.unwrap_or(0)).min(limit),
                reset,
                retry_after: reset.saturating_sub(now_unix),
            }
        };
        let local = |counts: &mut Slice| {
            let window = counts.enter(now_unix / 60);
            match counts.take_one(limit, now_unix) {
                Local::Allowed(left) => Err(decide(window, Some(left), counts.taken)),
                Local::Refused => Err(decide(window, None, counts.taken)),
                Local::Ask => Ok(window),
            }
        };
        if let Err(done) = local(&mut shared.counts.lock()) {
            return done;
        }
        let _taking = shared.taking.lock().await;
        // Another request may have taken a slice while this one waited.
        let window = match local(&mut shared.counts.lock()) {
            Err(done) => return done,
            Ok(window) => window,
        };
        let grant = store.reserve_requests(key, window as i64, slice(limit), limit).await;
        let mut counts = shared.counts.lock();
        if counts.window == window {
            match grant {
                Ok(grant) => {
                    counts.reserved += grant.granted;
                    counts.taken = counts.taken.max(grant.taken);
                    counts.spent = grant.granted == 0;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not take a rate-limit slice; counting alone for a while");
                    counts.alone_until = now_unix + ALONE_FOR_SECS;
                }
            }
        }
        match local(&mut counts) {
            Err(done) => done,
            // Only when the minute turned meanwhile: the next request asks again.
            Ok(window) => decide(window, None, counts.taken),
        }
    }

    /// Counts a request at `now_unix` against `limit` per minute.
    pub fn check(&self, who: Meter, limit: u64, now_unix: u64) -> Decision {
        let window = now_unix / 60;
        let reset = (window + 1) * 60;
        let mut entry = self.windows.entry(who).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset,
            retry_after: reset - now_unix,
        }
    }

    /// Drops counters of past windows (called periodically so memory follows active clients).
    pub fn sweep(&self, now_unix: u64) {
        let window = now_unix / 60;
        self.windows.retain(|_, (w, _)| *w == window);
        self.shared.retain(|_, s| s.counts.lock().window >= window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_never_goes_back_and_remembers_a_spent_window() {
        let mut s = Slice::default();
        assert_eq!(s.enter(10), 10);
        s.reserved = 2;
        assert!(matches!(s.take_one(100, 600), Local::Allowed(1)));
        // A request that read the clock in the minute before counts in this one.
        assert_eq!(s.enter(9), 10);
        assert!(matches!(s.take_one(100, 600), Local::Allowed(0)));
        assert!(matches!(s.take_one(100, 600), Local::Ask));
        s.spent = true;
        assert!(
            matches!(s.take_one(100, 600), Local::Refused),
            "a spent window asks the database no more"
        );
        assert_eq!(s.enter(11), 11);
        assert!(matches!(s.take_one(100, 660), Local::Ask), "a new minute starts afresh");
        // Without the database, a replica counts alone up to the limit.
        s.alone_until = 665;
        assert!(matches!(s.take_one(1, 660), Local::Allowed(0)));
        assert!(matches!(s.take_one(1, 661), Local::Refused));
        assert!(matches!(s.take_one(1, 665), Local::Ask));
    }

    #[test]
    fn counts_within_a_window_and_resets_on_the_minute() {
        let rl = RateLimiter::default();
        let who = Meter::Key(Uuid::nil());
        let t = 1_800_000_000 + 10;
        for i in 0..3 {
            let d = rl.check(who, 3, t);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
        }
        let d = rl.check(who, 3, t + 5);
        assert!(!d.allowed);
        assert_eq!(d.reset, t - 10 + 60);
        assert_eq!(d.retry_after, 45);
        assert!(rl.check(who, 3, t + 50).allowed);
        rl.sweep(t + 50);
        assert_eq!(rl.windows.len(), 1);
        rl.sweep(t + 120);
        assert!(rl.windows.is_empty());
    }
}
