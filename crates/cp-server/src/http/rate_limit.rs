//! Fixed one-minute windows aligned to the UTC minute, per API key (or per client address
//! for requests without a valid key).
//!
//! A plain counter per window is what API §1 specifies (and what `X-RateLimit-Reset` can
//! describe exactly); a GCRA limiter such as governor would smooth bursts differently from
//! the documented contract, so it is not used here.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use dashmap::DashMap;
use uuid::Uuid;

/// Who is being metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    Key(Uuid),
    Addr(IpAddr),
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
}

impl RateLimiter {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
