//! The dashboard's usage figures, kept for a few seconds per organization and window: a report
//! groups every execution of the window (tens of milliseconds at 10,000 runs on SQLite), and an
//! overview open in a tab asks for two of them every 5 seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cp_store::Store;
use cp_types::analytics::{UsageGroup, UsageItem};
use cp_types::bounded::BoundedMap;
use parking_lot::Mutex;

use crate::services::error::ServiceResult;

/// How long a report is served before it is computed again.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 1024;

type Key = (String, UsageGroup, i64);
/// When a report was computed, and its rows.
type Entry = (Instant, Arc<Vec<UsageItem>>);

/// Reports by organization, group and window length in days.
pub struct UsageCache {
    entries: Mutex<BoundedMap<Key, Entry>>,
}

impl Default for UsageCache {
    fn default() -> Self {
        UsageCache {
            entries: Mutex::new(BoundedMap::new(MAX_ENTRIES)),
        }
    }
}

impl UsageCache {
    /// The report of the last `days` days in `org`, at most [`FRESH_FOR`] old.
    pub async fn last_days(
        &self,
        store: &Store,
        org: &str,
        group: UsageGroup,
        days: i64,
    ) -> ServiceResult<Arc<Vec<UsageItem>>> {
        let key = (org.to_owned(), group, days);
        if let Some((at, items)) = self.entries.lock().get(&key)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(items.clone());
        }
        let until = cp_types::now();
        let items = Arc::new(
            store
                .analytics(org)
                .usage(group, until - chrono::Duration::days(days), until)
                .await?,
        );
        self.entries.lock().insert(key, (Instant::now(), items.clone()));
        Ok(items)
    }
}
