//! The retention sweeper: what is older than an organization's `event_retention_days` (events
//! of ended runs, policy decisions, finished webhook deliveries) is deleted in small batches,
//! with a pause between them so writers are never held up for long.

use std::time::Duration;

use cp_store::{Store, StoreResult};
use cp_types::Timestamp;

/// Runs whose events one batch deletes; rows of the other tables one batch deletes.
const EVENT_RUNS_PER_BATCH: i64 = 100;
const ROWS_PER_BATCH: i64 = 1000;
/// The pause between two batches.
const BREATHE: Duration = Duration::from_millis(20);

/// What one sweep of an organization deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub events: u64,
    pub decisions: u64,
    pub deliveries: u64,
}

/// Sweeps every organization as of `now`.
pub async fn sweep(store: &Store, now: Timestamp) -> StoreResult<Swept> {
    let mut total = Swept::default();
    for (org, days) in store.retention_days().await? {
        let swept = sweep_org(store, &org, now - chrono::Duration::days(days.max(1))).await?;
        total.events += swept.events;
        total.decisions += swept.decisions;
        total.deliveries += swept.deliveries;
    }
    Ok(total)
}

/// Deletes what `org` stored before `before`, batch by batch.
pub async fn sweep_org(store: &Store, org: &str, before: Timestamp) -> StoreResult<Swept> {
    let mut swept = Swept::default();
    loop {
        let n = store.purge_old_events(org, before, EVENT_RUNS_PER_BATCH).await?;
        swept.events += n;
        if n == 0 {
            break;
        }
        tokio::time::sleep(BREATHE).await;
    }
    loop {
        let n = store.purge_old_decisions(org, before, ROWS_PER_BATCH).await?;
        swept.decisions += n;
        if n < ROWS_PER_BATCH as u64 {
            break;
        }
        tokio::time::sleep(BREATHE).await;
    }
    loop {
        let n = store.purge_old_deliveries(org, before, ROWS_PER_BATCH).await?;
        swept.deliveries += n;
        if n < ROWS_PER_BATCH as u64 {
            break;
        }
        tokio::time::sleep(BREATHE).await;
    }
    Ok(swept)
}
