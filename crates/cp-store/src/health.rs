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
}
