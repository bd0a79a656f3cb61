//! Database checks for the health and readiness endpoints.

use std::time::{Duration, Instant};

use crate::Store;
use crate::db::with_db;
use crate::error::{StoreError, StoreResult};

impl Store {
    /// Round-trips a trivial query; returns how long it took.
    pub async fn ping(&self) -> StoreResult<Duration> {
        let started = Instant::now();
        let _: i64 = with_db!(&self.db, pool => sqlx::query_scalar("SELECT CAST(1 AS BIGINT)").fetch_one(pool).await)?;
        Ok(started.elapsed())
    }

    /// Ready means: the database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> StoreResult<()> {
        let applied: i64 = with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(pool).await)?;
        if applied < self.known_migrations() as i64 {
            return Err(StoreError::Unavailable(format!(
                "{applied} of {} migrations applied",
                self.known_migrations()
            )));
        }
        Ok(())
    }

    /// One organization's totals for the detailed health report: online workers, queued and
    /// running executions, pending webhook deliveries. One statement.
    pub async fn health_counts(&self, org: &str, now_ms: i64) -> StoreResult<(i64, i64, i64, i64)> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM workers WHERE organization_id = $2 \
                     AND status NOT IN ('offline', 'disconnected') AND alive_until > $1), \
                   (SELECT COUNT(*) FROM executions WHERE organization_id = $2 AND status = 'queued'), \
                   (SELECT COUNT(*) FROM executions WHERE organization_id = $2 AND status IN ('running', 'cancelling')), \
                   (SELECT COUNT(*) FROM webhook_deliveries WHERE organization_id = $2 AND status = 'pending')")
                .bind(now_ms).bind(org).fetch_one(pool).await)?)
    }
}
