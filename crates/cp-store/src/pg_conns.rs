//! PostgreSQL connections for the execution engine's hot statements, held out of sqlx's pool
//! between uses: the pool pings every connection it takes back, a round trip after every
//! statement (sqlx 0.9 has no option to skip it), which was half of an execution's round
//! trips to the database. They are the pool's own connections (checked out, never detached),
//! so the pool's bound is the replica's one bound on connections.
//!
//! A connection comes back here only when its user says the work on it went through
//! ([`HotConn::release`]); one dropped mid-statement (a cancelled request) or after a
//! database error goes back to the pool instead, which tests it before reusing it. One that
//! sat idle here for a while is pinged before use, as the pool does.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{StoreError, StoreResult};

/// Connections in use or kept at most: half of the pool's (see `db.rs`), so the other
/// statements always find connections, and a burst of hot requests waits instead of taking
/// them all.
pub(crate) const MAX_CONNECTIONS: usize = 16;

/// How long a connection sits idle before it is pinged on checkout.
pub(crate) const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a caller waits for a connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct HotConns {
    pool: PgPool,
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    slots: Semaphore,
}

impl HotConns {
    /// Connections come from `pool` and count against its bound.
    pub fn new(pool: PgPool) -> HotConns {
        HotConns {
            pool,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(MAX_CONNECTIONS),
        }
    }

    /// A connection for one piece of work; call [`HotConn::release`] when it went through.
    pub async fn get(&self) -> StoreResult<HotConn<'_>> {
        let slot = tokio::time::timeout(ACQUIRE_TIMEOUT, self.slots.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("no database connection free in time".into()))?
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        loop {
            let kept = self.idle.lock().pop();
            let conn = match kept {
                Some((mut conn, since)) => {
                    if since.elapsed() >= PING_WHEN_IDLE_FOR && conn.ping().await.is_err() {
                        continue;
                    }
                    conn
                }
                None => self.pool.acquire().await?,
            };
            return Ok(HotConn {
                conn: Some(conn),
                home: self,
                reusable: false,
                _slot: slot,
            });
        }
    }
}

impl HotConns {
    /// Hands every kept connection back to the pool and keeps none from now on: the pool's
    /// `close` waits for every connection it lent, and these would never come back.
    pub fn close(&self) {
        self.slots.close();
        self.idle.lock().clear();
    }
}

impl std::fmt::Debug for HotConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotConns")
            .field("idle", &self.idle.lock().len())
            .finish()
    }
}

/// A connection out of [`HotConns`].
pub struct HotConn<'a> {
    conn: Option<PoolConnection<Postgres>>,
    home: &'a HotConns,
    reusable: bool,
    _slot: SemaphorePermit<'a>,
}

impl HotConn<'_> {
    /// The work went through: the connection goes back for the next user.
    pub fn release(mut self) {
        self.reusable = true;
    }
}

impl Deref for HotConn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
            .as_deref()
            .expect("a checked-out connection is present until drop")
    }
}

impl DerefMut for HotConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .expect("a checked-out connection is present until drop")
    }
}

impl Drop for HotConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            // Under the lock `close` clears with, so a connection is never kept after it.
            let mut idle = self.home.idle.lock();
            if !self.home.slots.is_closed() {
                idle.push((conn, Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn conns() -> HotConns {
        let url = std::env::var("KUBIYA_CP_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2 * MAX_CONNECTIONS as u32)
            .connect(&url)
            .await
            .expect("PostgreSQL for the tests");
        HotConns::new(pool)
    }

    async fn backend_pid(conn: &mut PgConnection) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_a_connection_whose_work_went_through_is_reused() {
        let hot = conns().await;
        let mut c = hot.get().await.unwrap();
        let first = backend_pid(&mut c).await;
        c.release();
        let mut c = hot.get().await.unwrap();
        assert_eq!(backend_pid(&mut c).await, first, "a released connection is reused");
        // An error leaves the connection unreleased: it goes back to the pool, not here.
        assert!(sqlx::query("SELECT 1/0").execute(&mut *c).await.is_err());
        drop(c);
        assert_eq!(hot.idle.lock().len(), 0);
        let c = hot.get().await.unwrap();
        // A request cancelled mid-statement drops its connection unreleased too.
        let slow = async {
            let mut c = hot.get().await.unwrap();
            sqlx::query("SELECT pg_sleep(5)").execute(&mut *c).await.unwrap();
            c.release();
        };
        assert!(tokio::time::timeout(Duration::from_millis(100), slow).await.is_err());
        assert_eq!(hot.idle.lock().len(), 0);
        c.release();
        assert_eq!(hot.idle.lock().len(), 1);
    }

    #[tokio::test]
    async fn the_pool_closes_with_connections_kept_here() {
        let hot = conns().await;
        hot.get().await.unwrap().release();
        let out = hot.get().await.unwrap();
        hot.get().await.unwrap().release();
        assert_eq!(hot.idle.lock().len(), 1);
        hot.close();
        assert_eq!(hot.idle.lock().len(), 0);
        // One in use when the store closes goes back to the pool, not here.
        out.release();
        assert_eq!(hot.idle.lock().len(), 0);
        assert!(hot.get().await.is_err(), "a closed store lends nothing");
        let closed = tokio::time::timeout(Duration::from_secs(5), hot.pool.close()).await;
        assert!(closed.is_ok(), "the pool waited for connections kept here");
    }

    #[tokio::test]
    async fn at_most_so_many_are_out_at_once() {
        let hot = conns().await;
        let mut out = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            out.push(hot.get().await.unwrap());
        }
        let waited = tokio::time::timeout(Duration::from_millis(200), hot.get()).await;
        assert!(waited.is_err(), "the next caller waits for a free connection");
        // They are the pool's: it counts them against its own bound.
        assert_eq!(hot.pool.size() as usize, MAX_CONNECTIONS);
        out.pop().unwrap().release();
        let next = tokio::time::timeout(Duration::from_millis(500), hot.get()).await;
        assert!(matches!(next, Ok(Ok(_))));
    }
}
