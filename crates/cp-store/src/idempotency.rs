//! `Idempotency-Key` records: the first answer to a creating POST, replayed for 24 hours.

use chrono::Duration;
use cp_types::{Timestamp, now};

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::StoreResult;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::hours(24);
/// A request still "in progress" after this long is assumed to have died with its server.
const IN_PROGRESS_TIMEOUT: Duration = Duration::seconds(60);

/// What to do with a request carrying an idempotency key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First use: run the request, then [`Idempotency::finish`] or [`Idempotency::abandon`].
    Proceed,
    /// Seen before with the same request: answer this again.
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        /// The body was stored encrypted (it carries a secret): the caller opens it.
        sealed: bool,
    },
    /// Seen before with a different request.
    Mismatch,
    /// The first request with this key has not finished yet.
    InProgress,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    request_hash: String,
    status_code: Option<i64>,
    content_type: Option<String>,
    response_body: Option<Vec<u8>>,
    sealed: bool,
}

impl Store {
    /// Idempotency records of one organization.
    pub fn idempotency<'a>(&'a self, org: &'a str) -> Idempotency<'a> {
        Idempotency { db: &self.db, org }
    }

    /// Forgets up to `limit` records made before `before`; how many.
    pub async fn purge_idempotency(&self, before: Timestamp, limit: i64) -> StoreResult<u64> {
        let done = with_db!(&self.db, pool =>
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE (organization_id, idempotency_key) IN \
                 (SELECT organization_id, idempotency_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)")
                .bind(before).bind(limit).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(done)
    }
}

/// Idempotency records of one organization.
pub struct Idempotency<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Idempotency<'_> {
    /// Claims `key` for a request whose method, path and body hash to `request_hash`.
    pub async fn claim(&self, key: &str, request_hash: &str) -> StoreResult<Claim> {
        let at = now();
        with_db!(self.db, pool =>
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE organization_id = $1 AND idempotency_key = $2 \
                 AND (created_at < $3 OR (status_code IS NULL AND created_at < $4))")
                .bind(self.org).bind(key).bind(at - RETENTION).bind(at - IN_PROGRESS_TIMEOUT)
                .execute(pool).await.map(|r| r.rows_affected()))?;
        let inserted: Option<(String,)> = with_db!(self.db, pool =>
            sqlx::query_as(
                "INSERT INTO idempotency_keys (organization_id, idempotency_key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (organization_id, idempotency_key) DO NOTHING \
                 RETURNING idempotency_key")
                .bind(self.org).bind(key).bind(request_hash).bind(at)
                .fetch_optional(pool).await)?;
        if inserted.is_some() {
            return Ok(Claim::Proceed);
        }
        let row: Option<RecordRow> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT request_hash, status_code, content_type, response_body, sealed FROM idempotency_keys \
                 WHERE organization_id = $1 AND idempotency_key = $2")
                .bind(self.org).bind(key).fetch_optional(pool).await)?;
        Ok(match row {
            // Removed between our insert and select (expired and purged): treat as in progress,
            // the client retries.
            None => Claim::InProgress,
            Some(r) if r.request_hash != request_hash => Claim::Mismatch,
            Some(RecordRow {
                status_code: Some(status),
                content_type,
                response_body,
                sealed,
                ..
            }) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                content_type,
                body: response_body.unwrap_or_default(),
                sealed,
            },
            Some(_) => Claim::InProgress,
        })
    }

    /// Stores the answer to replay.
    /// `sealed`: the body is encrypted (the answer carries a secret).
    pub async fn finish(
        &self,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
        sealed: bool,
    ) -> StoreResult<()> {
        with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE idempotency_keys SET status_code = $3, content_type = $4, response_body = $5, sealed = $6 \
                 WHERE organization_id = $1 AND idempotency_key = $2")
                .bind(self.org).bind(key).bind(i64::from(status)).bind(content_type).bind(body).bind(sealed)
                .execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Releases the key so the request can be retried (the first attempt failed on our side).
    pub async fn abandon(&self, key: &str) -> StoreResult<()> {
        with_db!(self.db, pool =>
            sqlx::query("DELETE FROM idempotency_keys WHERE organization_id = $1 AND idempotency_key = $2 \
                         AND status_code IS NULL")
                .bind(self.org).bind(key).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
