//! Serialized agent and team list pages, reused while the organization's catalog version
//! (moved by database triggers on every write a list embeds) stays the same.
//!
//! A page of 100 agents with their environments, skills, projects and teams costs a few
//! milliseconds to query, decode and serialize; a cache hit costs one primary-key read. The
//! version is read before the page is built, so a page is never stored under a version newer
//! than its data: a write racing with a fill at worst costs the next reader a miss. Because the
//! version lives in the database, replicas sharing PostgreSQL never serve each other's stale pages.

use std::future::Future;

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use cp_store::Store;
use cp_types::bounded::BoundedMap;
use parking_lot::Mutex;
use serde::Serialize;

use crate::services::error::{ServiceError, ServiceResult};

/// Upper bounds on what the cache holds; past either, the oldest entries make room (stale
/// entries of old versions among them).
const MAX_ENTRIES: usize = 1024;
const MAX_BYTES: usize = 64 << 20;

/// Cached list bodies keyed by organization and the list's canonical query.
pub struct ListCache {
    inner: Mutex<Entries>,
}

impl Default for ListCache {
    fn default() -> Self {
        ListCache {
            inner: Mutex::new(Entries {
                map: BoundedMap::new(MAX_ENTRIES),
                bytes: 0,
            }),
        }
    }
}

struct Entries {
    map: BoundedMap<(String, String), (i64, Bytes)>,
    bytes: usize,
}

/// A JSON body ready to send.
pub struct JsonBytes(Bytes);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        ([(CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

impl ListCache {
    /// The body for `query` in `org`: the cached one if the catalog has not changed since it was
    /// built, else `load`'s result, serialized and kept.
    pub async fn get_or_load<T, F>(&self, store: &Store, org: &str, query: String, load: F) -> ServiceResult<JsonBytes>
    where
        T: Serialize,
        F: Future<Output = ServiceResult<T>>,
    {
        let version = store.catalog_version(org).await?;
        let key = (org.to_owned(), query);
        if let Some((v, body)) = self.inner.lock().map.get(&key)
            && *v == version
        {
            return Ok(JsonBytes(body.clone()));
        }
        let body = serde_json::to_vec(&load.await?).map_err(|e| {
            tracing::error!(error = %e, "cannot serialize a list page");
            ServiceError::internal()
        })?;
        let body = Bytes::from(body);
        let mut entries = self.inner.lock();
        if let Some((_, old)) = entries.map.remove(&key) {
            entries.bytes -= old.len();
        }
        // Room by either bound, made here so the byte count follows every entry that goes.
        while (entries.bytes + body.len() > MAX_BYTES || entries.map.len() >= MAX_ENTRIES)
            && let Some((_, (_, old))) = entries.map.pop_oldest()
        {
            entries.bytes -= old.len();
        }
        entries.bytes += body.len();
        entries.map.insert(key, (version, body.clone()));
        Ok(JsonBytes(body))
    }
}
