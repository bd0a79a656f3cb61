//! Forgetting what is past an organization's retention: events of ended executions, policy
//! decisions and finished webhook deliveries. Each call deletes one small batch, so a sweep
//! never holds the write lock (SQLite) or many row locks (PostgreSQL) for long.
//!
//! Rows are found by their UUIDv7 ids, which begin with their creation time: `id < cutoff` is
//! a range on an index every table already has.

use cp_types::Timestamp;
use uuid::Uuid;

use crate::Store;
use crate::db::with_db;
use crate::error::StoreResult;

/// The smallest UUIDv7 of the millisecond `at`: every row created before `at` sorts below it.
fn cutoff(at: Timestamp) -> Uuid {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &[0u8; 10]).into_uuid()
}

impl Store {
    /// Every organization with its `event_retention_days`.
    pub async fn retention_days(&self) -> StoreResult<Vec<(String, i64)>> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query_as("SELECT id, event_retention_days FROM organizations ORDER BY id").fetch_all(pool).await)?)
    }

    /// Deletes the events of at most `executions` runs of `org` that were created and ended
    /// before `before`; answers how many events went.
    pub async fn purge_old_events(&self, org: &str, before: Timestamp, executions: i64) -> StoreResult<u64> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query(
                "DELETE FROM execution_events WHERE execution_id IN ( \
                   SELECT e.id FROM executions e WHERE e.organization_id = $1 AND e.id < $2 \
                     AND e.status IN ('completed', 'failed', 'cancelled') AND e.completed_at < $3 \
                     AND EXISTS (SELECT 1 FROM execution_events ev WHERE ev.execution_id = e.id) \
                   ORDER BY e.id LIMIT $4)")
                .bind(org).bind(cutoff(before)).bind(before).bind(executions)
                .execute(pool).await.map(|r| r.rows_affected()))?)
    }

    /// Deletes at most `batch` policy decisions of `org` made before `before`.
    pub async fn purge_old_decisions(&self, org: &str, before: Timestamp, batch: i64) -> StoreResult<u64> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query(
                "DELETE FROM policy_decisions WHERE id IN ( \
                   SELECT id FROM policy_decisions WHERE organization_id = $1 AND id < $2 ORDER BY id LIMIT $3)")
                .bind(org).bind(cutoff(before)).bind(batch)
                .execute(pool).await.map(|r| r.rows_affected()))?)
    }

    /// Deletes at most `batch` finished (succeeded or failed) webhook deliveries of `org`
    /// created before `before`; pending ones are still being retried and stay.
    pub async fn purge_old_deliveries(&self, org: &str, before: Timestamp, batch: i64) -> StoreResult<u64> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE id IN ( \
                   SELECT id FROM webhook_deliveries WHERE organization_id = $1 AND id < $2 \
                     AND status <> 'pending' ORDER BY id LIMIT $3)")
                .bind(org).bind(cutoff(before)).bind(batch)
                .execute(pool).await.map(|r| r.rows_affected()))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_sorts_after_every_earlier_id_and_before_later_ones() {
        let at = cp_types::now();
        let earlier = Uuid::now_v7();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let at2 = cp_types::now();
        let later = {
            std::thread::sleep(std::time::Duration::from_millis(2));
            Uuid::now_v7()
        };
        assert!(earlier < cutoff(at2));
        assert!(cutoff(at2) < later);
        assert!(cutoff(at) <= cutoff(at2));
    }
}
