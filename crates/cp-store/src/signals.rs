//! What lets several server replicas on one PostgreSQL database act as one: notifications
//! between them (`LISTEN`/`NOTIFY`) and a leader lock for background singletons. With SQLite
//! there is one process, so notifications go nowhere and that process always leads.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgNotification};

use crate::Store;
use crate::db::Db;
use crate::error::StoreResult;

/// The channel replicas notify each other on.
pub const CHANNEL: &str = "kubiya_cp";

/// A `LISTEN` on [`CHANNEL`] (PostgreSQL only).
pub struct Subscription {
    listener: PgListener,
}

impl Subscription {
    /// The next payload. `None` after the connection was lost and re-established: whatever
    /// was sent meanwhile is gone, so the caller should assume everything changed.
    pub async fn recv(&mut self) -> StoreResult<Option<String>> {
        let n: Option<PgNotification> = self.listener.try_recv().await?;
        Ok(n.map(|n| n.payload().to_owned()))
    }
}

/// Held by the replica that runs the background singletons: a session advisory lock on a
/// connection of its own, released by PostgreSQL when that connection ends.
pub struct Leadership {
    conn: Option<PoolConnection<sqlx::Postgres>>,
}

impl Leadership {
    /// Whether the lock is still held (its connection still answers).
    pub async fn holds(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok(),
        }
    }
}

impl Store {
    /// Listens for other replicas' notifications; `None` on SQLite.
    pub async fn subscribe(&self) -> StoreResult<Option<Subscription>> {
        match &self.db {
            Db::Sqlite(..) => Ok(None),
            Db::Postgres(pool, _) => {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(CHANNEL).await?;
                Ok(Some(Subscription { listener }))
            }
        }
    }

    /// Sends payloads to every replica listening (itself included), in one statement.
    pub async fn notify(&self, payloads: &[String]) -> StoreResult<()> {
        if let Db::Postgres(pool, _) = &self.db
            && !payloads.is_empty()
        {
            sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(payloads)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Takes the leader lock `key` if no other replica holds it.
    pub async fn try_lead(&self, key: i64) -> StoreResult<Option<Leadership>> {
        match &self.db {
            Db::Sqlite(..) => Ok(Some(Leadership { conn: None })),
            Db::Postgres(pool, _) => {
                let mut conn = pool.acquire().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                // Without the lock the connection goes back to the pool; with it, it is kept
                // out of the pool for as long as this replica leads.
                Ok(got.then(|| Leadership { conn: Some(conn) }))
            }
        }
    }
}
