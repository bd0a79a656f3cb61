//! Embeddings of knowledge items: which items wait for one, storing them, and the items
//! nearest a query's vector (a scan of the organization's vectors, dot products in Rust).

use std::collections::HashMap;

use futures::TryStreamExt;
use sqlx::types::Json;
use uuid::Uuid;

use super::Knowledge;
use crate::db::{Db, with_db, with_db_sql, write_tx};
use crate::error::StoreResult;
use cp_types::knowledge::Search;
use cp_types::now;

/// An item waiting for its embedding, with what it is embedded from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ToEmbed {
    pub doc: i64,
    pub revision: i64,
    pub title: String,
    pub tags: Json<Vec<String>>,
    /// The start of the content.
    pub content: String,
}

/// What vectors are made by: the model (whose deletion drops them) and the name of its space
/// (provider, address and model name; vectors of two spaces do not compare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    pub model_id: Uuid,
    pub name: String,
}

/// An item near the query, with the cosine similarity of their vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub id: Uuid,
    pub similarity: f32,
}

/// The items with no vector of the space for their current revision.
const PENDING: (&str, &str) = (
    "SELECT k.doc, k.revision, k.title, k.tags, substr(k.content, 1, $4) AS content \
     FROM knowledge_items k LEFT JOIN knowledge_embeddings e ON e.doc = k.doc \
     WHERE k.organization_id = $1 AND k.doc > $5 \
       AND (e.doc IS NULL OR e.space <> $2 OR e.revision <> k.revision) \
     ORDER BY k.doc LIMIT $3",
    "SELECT k.doc, k.revision, k.title, k.tags, left(k.content, $4::int) AS content \
     FROM knowledge_items k LEFT JOIN knowledge_embeddings e ON e.doc = k.doc \
     WHERE k.organization_id = $1 AND k.doc > $5 \
       AND (e.doc IS NULL OR e.space <> $2 OR e.revision <> k.revision) \
     ORDER BY k.doc LIMIT $3",
);

/// Stores a vector only while the item is still at the revision it was made from. On
/// PostgreSQL the item's row is share-locked, so a rewrite in flight is waited for and then
/// seen (its transaction drops the vector of the old revision, which must not arrive after).
const SAVE: (&str, &str) = (
    "INSERT INTO knowledge_embeddings (doc, organization_id, model_id, space, revision, vector, embedded_at) \
     SELECT doc, organization_id, $3, $7, revision, $5, $6 FROM knowledge_items \
     WHERE organization_id = $1 AND doc = $2 AND revision = $4 \
     ON CONFLICT (doc) DO UPDATE SET organization_id = excluded.organization_id, model_id = excluded.model_id, \
       space = excluded.space, revision = excluded.revision, vector = excluded.vector, \
       embedded_at = excluded.embedded_at",
    "INSERT INTO knowledge_embeddings (doc, organization_id, model_id, space, revision, vector, embedded_at) \
     SELECT doc, organization_id, $3, $7, revision, $5, $6 FROM knowledge_items \
     WHERE organization_id = $1 AND doc = $2 AND revision = $4 FOR SHARE \
     ON CONFLICT (doc) DO UPDATE SET organization_id = excluded.organization_id, model_id = excluded.model_id, \
       space = excluded.space, revision = excluded.revision, vector = excluded.vector, \
       embedded_at = excluded.embedded_at",
);

/// The organization's vectors of a space: every stored vector is current (a write that
/// changes an item drops its vector).
const VECTORS: &str = "SELECT doc, vector FROM knowledge_embeddings WHERE organization_id = $1 AND space = $2";

/// The same, of the items a filtered search may return (project and tags as in full-text search).
const FILTERED_VECTORS: (&str, &str) = (
    "SELECT e.doc, e.vector FROM knowledge_embeddings e CROSS JOIN knowledge_items k ON k.doc = e.doc \
     WHERE e.organization_id = $1 AND k.organization_id = $1 AND e.space = $2 \
       AND ($3 IS NULL OR k.project_id = $3) \
       AND (SELECT COUNT(*) FROM json_each($4) t \
            WHERE EXISTS (SELECT 1 FROM json_each(k.tags) kt WHERE kt.value = t.value)) = json_array_length($4)",
    "SELECT e.doc, e.vector FROM knowledge_embeddings e JOIN knowledge_items k ON k.doc = e.doc \
     WHERE e.organization_id = $1 AND k.organization_id = $1 AND e.space = $2 \
       AND ($3::uuid IS NULL OR k.project_id = $3) AND k.tags @> $4::jsonb",
);

impl Knowledge<'_> {
    /// Up to `limit` items after `after` (a `doc`) without a current vector of `space`, in
    /// `doc` order, each with at most `max_chars` characters of its content. Going on from the
    /// last one read keeps a pass over the organization linear.
    pub async fn pending_embeddings(
        &self,
        space: &Space,
        after: i64,
        limit: i64,
        max_chars: i64,
    ) -> StoreResult<Vec<ToEmbed>> {
        Ok(with_db_sql!(self.db, pool, sql = (PENDING.0, PENDING.1) =>
            sqlx::query_as(sql).bind(self.org).bind(&space.name).bind(limit).bind(max_chars).bind(after)
                .fetch_all(pool).await)?)
    }

    /// Stores the vectors of `space` (made from the items' `revision`), unit length, in one
    /// transaction; returns how many were stored (an item written or deleted meanwhile is
    /// skipped: it waits again). An empty vector marks a revision the provider refused: it is
    /// no longer pending, and no query is near it.
    pub async fn save_embeddings(&self, space: &Space, vectors: &[(i64, i64, Vec<f32>)]) -> StoreResult<u64> {
        let at = now();
        Ok(write_tx!(self.db, tx, pg => {
            let mut stored = 0;
            for (doc, revision, vector) in vectors {
                stored += sqlx::query(if pg { SAVE.1 } else { SAVE.0 }).bind(self.org).bind(doc).bind(space.model_id).bind(revision)
                    .bind(encode(vector)).bind(at).bind(&space.name)
                    .execute(&mut *tx).await?.rows_affected();
            }
            stored
        }))
    }

    /// How many items have a vector of `space`, and how many items there are.
    pub async fn embedding_coverage(&self, space: &Space) -> StoreResult<(i64, i64)> {
        let embedded: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM knowledge_embeddings WHERE organization_id = $1 AND space = $2")
                .bind(self.org).bind(&space.name).fetch_one(pool).await)?;
        let total: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM knowledge_items WHERE organization_id = $1")
                .bind(self.org).fetch_one(pool).await)?;
        Ok((embedded, total))
    }

    /// The `k` items whose vectors of `space` are nearest `query`, nearest first. The vectors
    /// are read as a stream, so memory holds one row and the best similarities; the items are
    /// joined only when the search filters them.
    pub async fn nearest(
        &self,
        space: &Space,
        query: &[f32],
        search: &Search,
        k: usize,
    ) -> StoreResult<Vec<VectorHit>> {
        let query = unit(query);
        let mut best = Best::new(k);
        if search.project_id.is_some() || !search.tags.is_empty() {
            with_db_sql!(self.db, pool, sql = (FILTERED_VECTORS.0, FILTERED_VECTORS.1) => {
                let rows = sqlx::query_as(sql).bind(self.org).bind(&space.name)
                    .bind(search.project_id).bind(Json(&search.tags)).fetch(pool);
                best.scan(rows, &query).await?
            });
        } else {
            with_db!(self.db, pool => {
                let rows = sqlx::query_as(VECTORS).bind(self.org).bind(&space.name).fetch(pool);
                best.scan(rows, &query).await?
            });
        }
        let best = best.into_sorted();
        let docs: Vec<i64> = best.iter().map(|(doc, _)| *doc).collect();
        let ids: Vec<(i64, Uuid)> = match self.db {
            Db::Sqlite(pool, _) => {
                sqlx::query_as(
                    "SELECT doc, id FROM knowledge_items WHERE organization_id = $1 \
                 AND doc IN (SELECT value FROM json_each($2))",
                )
                .bind(self.org)
                .bind(Json(&docs))
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool, _) => {
                sqlx::query_as("SELECT doc, id FROM knowledge_items WHERE organization_id = $1 AND doc = ANY($2)")
                    .bind(self.org)
                    .bind(&docs)
                    .fetch_all(pool)
                    .await?
            }
        };
        let ids: HashMap<i64, Uuid> = ids.into_iter().collect();
        Ok(best
            .into_iter()
            .filter_map(|(doc, similarity)| {
                Some(VectorHit {
                    id: *ids.get(&doc)?,
                    similarity,
                })
            })
            .collect())
    }
}

/// The `k` best similarities of a scan, by item `doc`.
struct Best {
    k: usize,
    hits: Vec<(i64, f32)>,
}

impl Best {
    fn new(k: usize) -> Best {
        Best { k, hits: Vec::new() }
    }

    /// Reads `(doc, vector)` rows, keeping the best matches of `query`, and lets other tasks
    /// run now and then.
    async fn scan<'r>(
        &mut self,
        mut rows: impl futures::Stream<Item = Result<(i64, Vec<u8>), sqlx::Error>> + Unpin + 'r,
        query: &[f32],
    ) -> StoreResult<()> {
        let mut read = 0u32;
        while let Some((doc, bytes)) = rows.try_next().await? {
            // Unrelated (orthogonal or opposite) items are no match at all.
            if let Some(similarity) = dot(&bytes, query).filter(|s| *s > 0.0) {
                self.hits.push((doc, similarity));
            }
            if self.hits.len() >= 4 * self.k.max(1) {
                self.hits.select_nth_unstable_by(self.k, |a, b| b.1.total_cmp(&a.1));
                self.hits.truncate(self.k);
            }
            read += 1;
            if read.is_multiple_of(1024) {
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    fn into_sorted(mut self) -> Vec<(i64, f32)> {
        self.hits.sort_by(|a, b| b.1.total_cmp(&a.1));
        self.hits.truncate(self.k);
        self.hits
    }
}

/// `v` scaled to unit length (a zero vector stays zero).
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| x / norm).collect()
}

/// A vector as stored: scaled to unit length, then quantized to one signed byte per
/// dimension after a little-endian f32 scale (a quarter of f32s on disk and to read, and the
/// ranking barely moves). Empty stays empty: the mark of a refused item.
fn encode(v: &[f32]) -> Vec<u8> {
    if v.is_empty() {
        return Vec::new();
    }
    let v = unit(v);
    let largest = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if largest == 0.0 { 0.0 } else { largest / 127.0 };
    let mut out = Vec::with_capacity(4 + v.len());
    out.extend_from_slice(&scale.to_le_bytes());
    for x in &v {
        let q = if scale == 0.0 { 0.0 } else { (x / scale).round() };
        out.push(q.clamp(-127.0, 127.0) as i8 as u8);
    }
    out
}

/// The dot product of a stored vector and the unit `query` (their cosine); `None` when their
/// sizes differ (a vector of the model before it changed its dimensions, or a refused item).
fn dot(stored: &[u8], query: &[f32]) -> Option<f32> {
    let (scale, bytes) = stored.split_first_chunk::<4>()?;
    if bytes.len() != query.len() {
        return None;
    }
    // Eight running sums, so the compiler can keep them in vector registers.
    let mut sums = [0f32; 8];
    let (stored8, rest) = bytes.as_chunks::<8>();
    let (query8, query_rest) = query.as_chunks::<8>();
    for (b, q) in stored8.iter().zip(query8) {
        for i in 0..8 {
            sums[i] += f32::from(b[i] as i8) * q[i];
        }
    }
    let tail: f32 = rest.iter().zip(query_rest).map(|(b, q)| f32::from(*b as i8) * q).sum();
    Some((sums.iter().sum::<f32>() + tail) * f32::from_le_bytes(*scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_vectors_compare_by_cosine_within_a_percent() {
        let stored = encode(&[3.0, 4.0]);
        let same = dot(&stored, &unit(&[6.0, 8.0])).unwrap();
        assert!((same - 1.0).abs() < 0.01, "{same}");
        let orthogonal = dot(&stored, &unit(&[-4.0, 3.0])).unwrap();
        assert!(orthogonal.abs() < 0.01, "{orthogonal}");
        assert_eq!(dot(&stored, &[1.0, 0.0, 0.0]), None, "another size is no match");
        assert_eq!(dot(&encode(&[]), &[1.0]), None, "a refused item is near nothing");
        assert_eq!(dot(&encode(&[0.0, 0.0]), &[0.6, 0.8]), Some(0.0));
        // Quantized, 384 dimensions keep the cosine within a percent.
        let a: Vec<f32> = (0..384).map(|i| ((i * 7919) % 113) as f32 - 56.0).collect();
        let b: Vec<f32> = (0..384).map(|i| ((i * 104_729) % 97) as f32 - 40.0).collect();
        let exact: f32 = unit(&a).iter().zip(unit(&b)).map(|(x, y)| x * y).sum();
        let quantized = dot(&encode(&a), &unit(&b)).unwrap();
        assert!((exact - quantized).abs() < 0.01, "{exact} {quantized}");
    }
}
