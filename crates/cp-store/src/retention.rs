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

    /// Deletes at most `batch` events of runs of `org` that were created and ended before
    /// `before`, walking the runs in id order from `from` (the previous batch's answer: runs
    /// below it have no events left). Answers how many went and where the next batch starts;
    /// the count is bounded, not the runs, as one run may hold many thousand events.
    pub async fn purge_old_events(
        &self,
        org: &str,
        before: Timestamp,
        from: Uuid,
        batch: i64,
    ) -> StoreResult<(u64, Uuid)> {
        let runs: Vec<Uuid> = with_db!(&self.db, pool =>
            sqlx::query_scalar(
                "DELETE FROM execution_events WHERE (execution_id, seq) IN ( \
                   SELECT ev.execution_id, ev.seq FROM executions e JOIN execution_events ev ON ev.execution_id = e.id \
                   WHERE e.organization_id = $1 AND e.id >= $2 AND e.id < $3 \
                     AND e.status IN ('completed', 'failed', 'cancelled') AND e.completed_at < $4 \
                   ORDER BY e.id LIMIT $5) \
                 RETURNING execution_id")
                .bind(org).bind(from).bind(cutoff(before)).bind(before).bind(batch)
                .fetch_all(pool).await)?;
        Ok((runs.len() as u64, runs.into_iter().max().unwrap_or(from)))
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

    /// Deletes at most `batch` settled firings of `org`'s jobs made before `before`; firings
    /// still pending, buffered or running stay.
    pub async fn purge_old_firings(&self, org: &str, before: Timestamp, batch: i64) -> StoreResult<u64> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query(
                "DELETE FROM job_firings WHERE id IN ( \
                   SELECT id FROM job_firings WHERE organization_id = $1 AND id < $2 \
                     AND status NOT IN ('pending', 'buffered', 'started') ORDER BY id LIMIT $3)")
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
