//! Embeddings of knowledge items: which items wait for one, storing them, and the items
//! nearest a query's vector (a scan of the organization's vectors, dot products in Rust).

use futures::TryStreamExt;
use sqlx::types::Json;
use uuid::Uuid;

use super::Knowledge;
use crate::db::{with_db, with_db_sql, write_tx};
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

/// Stores a vector only while the item is still at the revision it was made from.
const SAVE: &str = "\
    INSERT INTO knowledge_embeddings (doc, organization_id, model_id, space, revision, vector, embedded_at) \
    SELECT doc, organization_id, $3, $7, revision, $5, $6 FROM knowledge_items \
    WHERE organization_id = $1 AND doc = $2 AND revision = $4 \
    ON CONFLICT (doc) DO UPDATE SET organization_id = excluded.organization_id, model_id = excluded.model_id, \
      space = excluded.space, revision = excluded.revision, vector = excluded.vector, \
      embedded_at = excluded.embedded_at";

/// The current vectors of a space for the items a search may return (project and tags as in
/// full-text search).
const VECTORS: (&str, &str) = (
    "SELECT k.id, e.vector FROM knowledge_embeddings e CROSS JOIN knowledge_items k ON k.doc = e.doc \
     WHERE e.organization_id = $1 AND k.organization_id = $1 AND e.space = $2 AND e.revision = k.revision \
       AND ($3 IS NULL OR k.project_id = $3) \
       AND (SELECT COUNT(*) FROM json_each($4) t \
            WHERE EXISTS (SELECT 1 FROM json_each(k.tags) kt WHERE kt.value = t.value)) = json_array_length($4)",
    "SELECT k.id, e.vector FROM knowledge_embeddings e JOIN knowledge_items k ON k.doc = e.doc \
     WHERE e.organization_id = $1 AND k.organization_id = $1 AND e.space = $2 AND e.revision = k.revision \
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
        Ok(write_tx!(self.db, tx, _pg => {
            let mut stored = 0;
            for (doc, revision, vector) in vectors {
                stored += sqlx::query(SAVE).bind(self.org).bind(doc).bind(space.model_id).bind(revision)
                    .bind(encode(vector)).bind(at).bind(&space.name)
                    .execute(&mut *tx).await?.rows_affected();
            }
            stored
        }))
    }

    /// How many items have a current vector of `space`, and how many items there are.
    pub async fn embedding_coverage(&self, space: &Space) -> StoreResult<(i64, i64)> {
        let embedded: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM knowledge_embeddings e JOIN knowledge_items k ON k.doc = e.doc \
                 WHERE e.organization_id = $1 AND e.space = $2 AND e.revision = k.revision")
                .bind(self.org).bind(&space.name).fetch_one(pool).await)?;
        let total: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM knowledge_items WHERE organization_id = $1")
                .bind(self.org).fetch_one(pool).await)?;
        Ok((embedded, total))
    }

    /// The `k` items whose vectors of `space` are nearest `query`, nearest first. The vectors
    /// are read as a stream, so memory holds one row and the similarities.
    pub async fn nearest(
        &self,
        space: &Space,
        query: &[f32],
        search: &Search,
        k: usize,
    ) -> StoreResult<Vec<VectorHit>> {
        let query = unit(query);
        let mut hits = Vec::new();
        let by_similarity = |a: &VectorHit, b: &VectorHit| b.similarity.total_cmp(&a.similarity);
        with_db_sql!(self.db, pool, sql = (VECTORS.0, VECTORS.1) => {
            let mut rows = sqlx::query_as::<_, (Uuid, Vec<u8>)>(sql)
                .bind(self.org).bind(&space.name).bind(search.project_id).bind(Json(&search.tags))
                .fetch(pool);
            let mut read = 0u32;
            while let Some((id, bytes)) = rows.try_next().await? {
                // Unrelated (orthogonal or opposite) items are no match at all.
                if let Some(similarity) = dot(&bytes, &query).filter(|s| *s > 0.0) {
                    hits.push(VectorHit { id, similarity });
                }
                // Only the best `k` are kept, and the scan lets other tasks run now and then.
                if hits.len() >= 4 * k.max(1) {
                    hits.select_nth_unstable_by(k, by_similarity);
                    hits.truncate(k);
                }
                read += 1;
                if read.is_multiple_of(1024) {
                    tokio::task::yield_now().await;
                }
            }
        });
        hits.sort_by(by_similarity);
        hits.truncate(k);
        Ok(hits)
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

fn encode(v: &[f32]) -> Vec<u8> {
    unit(v).iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The dot product of a stored vector and `query`; `None` when their sizes differ (a vector
/// of the model before it changed its dimensions).
fn dot(stored: &[u8], query: &[f32]) -> Option<f32> {
    if stored.len() != query.len() * 4 {
        return None;
    }
    Some(
        stored
            .chunks_exact(4)
            .zip(query)
            .map(|(b, q)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * q)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_vectors_are_unit_length_and_compare_by_cosine() {
        let stored = encode(&[3.0, 4.0]);
        let same = dot(&stored, &unit(&[6.0, 8.0])).unwrap();
        assert!((same - 1.0).abs() < 1e-6);
        let orthogonal = dot(&stored, &unit(&[-4.0, 3.0])).unwrap();
        assert!(orthogonal.abs() < 1e-6);
        assert_eq!(dot(&stored, &[1.0, 0.0, 0.0]), None, "another size is no match");
        assert_eq!(unit(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
