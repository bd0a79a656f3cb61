//! The retention sweeper: what is older than an organization's `event_retention_days` (events
//! of ended runs, policy decisions, finished webhook deliveries, settled job firings) is deleted in small batches,
//! with a pause between them so writers are never held up for long; so are idempotency
//! records past their 24 h.

use std::time::{Duration, Instant};

use cp_store::{Store, StoreResult};
use cp_types::Timestamp;
use parking_lot::Mutex;
use uuid::Uuid;

/// Rows one batch deletes: on SQLite a batch holds the write lock for a few milliseconds.
const ROWS_PER_BATCH: i64 = 1000;
/// The least pause between two batches.
const BREATHE: Duration = Duration::from_millis(20);
/// The pause is also at least this many times the batch's own time, so the sweep takes at
/// most a tenth of the database's time (of SQLite's write lock) however slow a batch is.
const PAUSE_PER_BATCH_TIME: u32 = 9;

/// What one sweep of an organization deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub events: u64,
    pub decisions: u64,
    pub deliveries: u64,
    pub firings: u64,
    pub idempotency_records: u64,
}

/// Sweeps every organization as of `now`.
pub async fn sweep(store: &Store, now: Timestamp) -> StoreResult<Swept> {
    let expired = now - cp_store::idempotency::RETENTION;
    let mut total = Swept {
        idempotency_records: drain(|| store.purge_idempotency(expired, ROWS_PER_BATCH)).await?,
        ..Swept::default()
    };
    for (org, days) in store.retention_days().await? {
        let swept = sweep_org(store, &org, now - chrono::Duration::days(days.max(1))).await?;
        total.events += swept.events;
        total.decisions += swept.decisions;
        total.deliveries += swept.deliveries;
        total.firings += swept.firings;
    }
    Ok(total)
}

/// Deletes what `org` stored before `before`, batch by batch.
pub async fn sweep_org(store: &Store, org: &str, before: Timestamp) -> StoreResult<Swept> {
    // Where the next batch starts (the runs before it have no events left).
    let from = Mutex::new(Uuid::nil());
    let events = drain(|| async {
        let start = *from.lock();
        let (n, next) = store.purge_old_events(org, before, start, ROWS_PER_BATCH).await?;
        *from.lock() = next;
        Ok(n)
    })
    .await?;
    Ok(Swept {
        events,
        decisions: drain(|| store.purge_old_decisions(org, before, ROWS_PER_BATCH)).await?,
        deliveries: drain(|| store.purge_old_deliveries(org, before, ROWS_PER_BATCH)).await?,
        firings: drain(|| store.purge_old_firings(org, before, ROWS_PER_BATCH)).await?,
        idempotency_records: 0,
    })
}

/// Runs `batch` until it deletes nothing, pausing between batches; the rows deleted.
async fn drain<F: Future<Output = StoreResult<u64>>>(mut batch: impl FnMut() -> F) -> StoreResult<u64> {
    let mut total = 0;
    loop {
        let started = Instant::now();
        let n = batch().await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        tokio::time::sleep(BREATHE.max(started.elapsed() * PAUSE_PER_BATCH_TIME)).await;
    }
}
