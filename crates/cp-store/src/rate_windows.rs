//! Rate-limit windows shared by the replicas of one PostgreSQL database. A replica takes a
//! slice of a key's per-minute limit at a time (one statement) and counts it down in memory,
//! so the replicas together never allow more than the limit. SQLite has one server, which
//! counts in memory alone.

use crate::Store;
use crate::db::Db;
use crate::error::StoreResult;
use uuid::Uuid;

/// What a reservation got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Requests this replica may now allow.
    pub granted: u64,
    /// Requests all replicas took in the window, this grant included.
    pub taken: u64,
}

impl Store {
    /// Whether rate windows are shared (PostgreSQL) rather than counted by each process.
    pub fn shares_rate_windows(&self) -> bool {
        matches!(self.db, Db::Postgres(..))
    }

    /// Takes up to `want` more requests of `meter`'s `limit` in the minute `window` (Unix
    /// minutes) from the count every replica shares; none once the limit is reached. On
    /// SQLite everything asked is granted (nothing is shared).
    pub async fn reserve_requests(&self, meter: Uuid, window: i64, want: u64, limit: u64) -> StoreResult<Grant> {
        let Db::Postgres(pool, _) = &self.db else {
            return Ok(Grant {
                granted: want,
                taken: 0,
            });
        };
        let (want, limit) = (want as i64, limit as i64);
        // Every SET expression reads the row as it was, so `last_grant` is what this statement
        // added.
        let (used, granted): (i64, i64) = sqlx::query_as(
            "INSERT INTO rate_windows (meter, window_start, used, last_grant) \
             VALUES ($1, $2, LEAST($3, $4), LEAST($3, $4)) \
             ON CONFLICT (meter, window_start) DO UPDATE \
               SET used = LEAST($4, rate_windows.used + $3), \
                   last_grant = LEAST($4, rate_windows.used + $3) - rate_windows.used \
             RETURNING used, last_grant",
        )
        .bind(meter)
        .bind(window)
        .bind(want)
        .bind(limit)
        .fetch_one(pool)
        .await?;
        Ok(Grant {
            granted: granted.max(0) as u64,
            taken: used.max(0) as u64,
        })
    }

    /// Forgets the windows before minute `window`; how many.
    pub async fn purge_rate_windows(&self, window: i64) -> StoreResult<u64> {
        let Db::Postgres(pool, _) = &self.db else {
            return Ok(0);
        };
        let done = sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
            .bind(window)
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }
}
