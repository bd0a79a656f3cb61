//! Knowledge items and their full-text search: BM25 over SQLite's FTS5 index, `tsvector` with
//! a GIN index on PostgreSQL (both kept by the database itself, see migration 0024), and
//! their embeddings (`vectors`).

mod vectors;

pub use vectors::{Space, ToEmbed, VectorHit};

use cp_types::knowledge::{KnowledgeItem, KnowledgeSummary, PREVIEW_CHARS, Search, SearchHit};
use cp_types::page::PageRequest;
use cp_types::{Page, Timestamp, now};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, with_db_sql, write_tx};
use crate::error::{StoreError, StoreResult};
use crate::page::page_of;

macro_rules! item_columns {
    () => {
        "id, organization_id, title, content, tags, source, project_id, created_by, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: Uuid,
    organization_id: String,
    title: String,
    content: String,
    tags: Json<Vec<String>>,
    source: Option<String>,
    project_id: Option<Uuid>,
    created_by: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<ItemRow> for KnowledgeItem {
    fn from(r: ItemRow) -> Self {
        KnowledgeItem {
            id: r.id,
            organization_id: r.organization_id,
            title: r.title,
            content: r.content,
            tags: r.tags.0,
            source: r.source,
            project_id: r.project_id,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: Uuid,
    organization_id: String,
    title: String,
    preview: String,
    content_bytes: i64,
    tags: Json<Vec<String>>,
    source: Option<String>,
    project_id: Option<Uuid>,
    created_by: Option<String>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl SummaryRow {
    fn into_summary(self) -> StoreResult<KnowledgeSummary> {
        Ok(KnowledgeSummary {
            id: self.id,
            organization_id: self.organization_id,
            title: self.title,
            preview: self.preview,
            content_bytes: self.content_bytes,
            tags: self.tags.0,
            source: self.source,
            project_id: self.project_id,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct HitRow {
    id: Uuid,
    title: String,
    tags: Json<Vec<String>>,
    source: Option<String>,
    project_id: Option<Uuid>,
    score: f64,
    snippet: Option<String>,
    updated_at: Timestamp,
}

/// A knowledge item as a write leaves it.
#[derive(Debug, Clone)]
pub struct KnowledgeDraft {
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
    pub source: Option<String>,
    pub project_id: Option<Uuid>,
}

impl Store {
    /// The knowledge items of one organization.
    pub fn knowledge<'a>(&'a self, org: &'a str) -> Knowledge<'a> {
        Knowledge { db: &self.db, org }
    }
}

pub struct Knowledge<'a> {
    db: &'a Db,
    org: &'a str,
}

/// Ranks first, then highlights only the page's rows: `snippet` reads and tokenizes a whole
/// item, and computed for every match before the sort it made a common word's search take
/// seconds over 100,000 items. `CROSS JOIN` keeps the full-text index as the outer loop.
/// Title, content and tags weigh 10, 1 and 5 in `bm25`.
const SQLITE_SEARCH: &str = "\
    WITH top AS ( \
      SELECT knowledge_fts.rowid AS doc, bm25(knowledge_fts, 10.0, 1.0, 5.0) AS rank \
      FROM knowledge_fts CROSS JOIN knowledge_items k ON k.doc = knowledge_fts.rowid \
      WHERE knowledge_fts MATCH $2 AND k.organization_id = $1 AND ($3 IS NULL OR k.project_id = $3) \
        AND (SELECT COUNT(*) FROM json_each($4) t \
             WHERE EXISTS (SELECT 1 FROM json_each(k.tags) kt WHERE kt.value = t.value)) = json_array_length($4) \
      ORDER BY rank LIMIT $5) \
    SELECT k.id, k.title, k.tags, k.source, k.project_id, k.updated_at, -top.rank AS score, \
           snippet(knowledge_fts, -1, '**', '**', '…', 32) AS snippet \
    FROM top CROSS JOIN knowledge_fts ON knowledge_fts.rowid = top.doc \
      CROSS JOIN knowledge_items k ON k.doc = top.doc \
    WHERE knowledge_fts MATCH $2 ORDER BY top.rank";

/// Ranks first, then highlights only the page's rows: `ts_headline` reparses the text.
const POSTGRES_SEARCH: &str = "\
    WITH q AS (SELECT to_tsquery('english', $2) AS query), \
    ranked AS ( \
      SELECT k.doc, ts_rank_cd(k.search, q.query, 1)::float8 AS score \
      FROM knowledge_items k, q \
      WHERE k.organization_id = $1 AND k.search @@ q.query AND ($3::uuid IS NULL OR k.project_id = $3) \
        AND k.tags @> $4::jsonb \
      ORDER BY score DESC, k.doc DESC LIMIT $5) \
    SELECT k.id, k.title, k.tags, k.source, k.project_id, k.updated_at, r.score, \
           ts_headline('english', left(k.content, 65536), q.query, \
             'StartSel=**, StopSel=**, MaxFragments=1, MaxWords=40, MinWords=12, FragmentDelimiter=…') AS snippet \
    FROM ranked r JOIN knowledge_items k ON k.doc = r.doc, q \
    ORDER BY r.score DESC, k.doc DESC";

impl Knowledge<'_> {
    /// Newest first, without content (each row shows its start).
    pub async fn list(&self, page: PageRequest, project: Option<Uuid>) -> StoreResult<Page<KnowledgeSummary>> {
        let rows: Vec<SummaryRow> = with_db_sql!(self.db, pool, sql = (
            "SELECT id, organization_id, title, substr(content, 1, $5) AS preview, \
               length(CAST(content AS BLOB)) AS content_bytes, tags, source, project_id, created_by, created_at, \
               updated_at FROM knowledge_items WHERE organization_id = $1 AND ($4 IS NULL OR project_id = $4) \
             ORDER BY id DESC LIMIT $2 OFFSET $3",
            "SELECT id, organization_id, title, left(content, $5) AS preview, \
               octet_length(content)::bigint AS content_bytes, tags, source, project_id, created_by, created_at, \
               updated_at FROM knowledge_items WHERE organization_id = $1 AND ($4::uuid IS NULL OR project_id = $4) \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        ) => sqlx::query_as(sql).bind(self.org).bind(page.limit).bind(page.offset).bind(project)
                .bind(PREVIEW_CHARS as i32).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db_sql!(self.db, pool, sql = (
                "SELECT COUNT(*) FROM knowledge_items WHERE organization_id = $1 AND ($2 IS NULL OR project_id = $2)",
                "SELECT COUNT(*) FROM knowledge_items WHERE organization_id = $1 AND ($2::uuid IS NULL OR project_id = $2)"
            ) => sqlx::query_scalar(sql).bind(self.org).bind(project).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, SummaryRow::into_summary).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<KnowledgeItem> {
        let row: ItemRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", item_columns!(), " FROM knowledge_items WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        Ok(row.into())
    }

    /// The items among `ids`, in no particular order (unknown ids are left out), each with at
    /// most the first `max_chars` characters of its content: a context may name 1,000 items of
    /// 1 MiB, and a claim must not read a gigabyte to place a few pages of them.
    pub async fn get_many(&self, ids: &[Uuid], max_chars: i64) -> StoreResult<Vec<KnowledgeItem>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(100) {
            let rows: Vec<ItemRow> = match self.db {
                Db::Sqlite(pool, _) => {
                    let hex: Vec<String> = chunk.iter().map(|id| id.simple().to_string()).collect();
                    sqlx::query_as(
                        "SELECT id, organization_id, title, substr(content, 1, $3) AS content, tags, source, project_id, \
                           created_by, created_at, updated_at FROM knowledge_items WHERE organization_id = $1 \
                         AND id IN (SELECT unhex(value) FROM json_each($2))",
                    )
                    .bind(self.org)
                    .bind(Json(hex))
                    .bind(max_chars)
                    .fetch_all(pool)
                    .await?
                }
                Db::Postgres(pool, _) => sqlx::query_as(
                    "SELECT id, organization_id, title, left(content, $3::int) AS content, tags, source, project_id, \
                           created_by, created_at, updated_at FROM knowledge_items WHERE organization_id = $1 \
                         AND id = ANY($2)",
                )
                .bind(self.org)
                .bind(chunk)
                .bind(max_chars)
                .fetch_all(pool)
                .await?,
            };
            out.extend(rows.into_iter().map(KnowledgeItem::from));
        }
        Ok(out)
    }

    /// Which of `ids` are items of the organization.
    pub async fn existing(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let found: Vec<Uuid> = match self.db {
                Db::Sqlite(pool, _) => {
                    let hex: Vec<String> = chunk.iter().map(|id| id.simple().to_string()).collect();
                    sqlx::query_scalar(
                        "SELECT id FROM knowledge_items WHERE organization_id = $1 \
                        AND id IN (SELECT unhex(value) FROM json_each($2))",
                    )
                    .bind(self.org)
                    .bind(Json(hex))
                    .fetch_all(pool)
                    .await?
                }
                Db::Postgres(pool, _) => {
                    sqlx::query_scalar("SELECT id FROM knowledge_items WHERE organization_id = $1 AND id = ANY($2)")
                        .bind(self.org)
                        .bind(chunk)
                        .fetch_all(pool)
                        .await?
                }
            };
            out.extend(found);
        }
        Ok(out)
    }

    pub async fn create(&self, draft: &KnowledgeDraft, created_by: Option<&str>) -> StoreResult<KnowledgeItem> {
        let (id, at) = (Uuid::now_v7(), now());
        let row: ItemRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "INSERT INTO knowledge_items (id, organization_id, title, content, tags, source, project_id, created_by, \
                   created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING ", item_columns!()))
                .bind(id).bind(self.org).bind(draft.title.trim()).bind(&draft.content).bind(Json(&draft.tags))
                .bind(&draft.source).bind(draft.project_id).bind(created_by).bind(at)
                .fetch_one(pool).await)?;
        Ok(row.into())
    }

    /// Rewrites an item. A change of what it is embedded from (title, tags, content) raises
    /// its revision and drops its vector in the same transaction: a vector stored is current.
    pub async fn update(&self, id: Uuid, draft: &KnowledgeDraft) -> StoreResult<KnowledgeItem> {
        let row: Option<ItemRow> = write_tx!(self.db, tx, _pg => {
            let row: Option<ItemRow> = sqlx::query_as(concat!(
                "UPDATE knowledge_items SET revision = revision + CASE WHEN title = $3 AND content = $4 \
                   AND tags = $5 THEN 0 ELSE 1 END, title = $3, content = $4, tags = $5, source = $6, \
                   project_id = $7, updated_at = $8 WHERE organization_id = $1 AND id = $2 RETURNING ", item_columns!()))
                .bind(self.org).bind(id).bind(draft.title.trim()).bind(&draft.content).bind(Json(&draft.tags))
                .bind(&draft.source).bind(draft.project_id).bind(now())
                .fetch_optional(&mut *tx).await?;
            if row.is_some() {
                sqlx::query(
                    "DELETE FROM knowledge_embeddings WHERE doc = (SELECT doc FROM knowledge_items \
                       WHERE organization_id = $1 AND id = $2) \
                     AND revision <> (SELECT revision FROM knowledge_items WHERE organization_id = $1 AND id = $2)")
                    .bind(self.org).bind(id).execute(&mut *tx).await?;
            }
            row
        });
        Ok(row.ok_or(StoreError::NotFound)?.into())
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let done = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM knowledge_items WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The best matches, best first, each with the passage that matched: the items holding
    /// every word of the search, then (when those are fewer than the limit) the items holding
    /// any of them. Ranking every item that holds a common word costs about 1.5 µs each: the
    /// items holding all the words are far fewer.
    pub async fn search(&self, search: &Search) -> StoreResult<Vec<SearchHit>> {
        let all = self.matching(search, true).await?;
        let mut hits = scored(all, 1.0);
        if hits.len() < search.limit as usize && search.terms.len() > 1 {
            // Items holding only some of the words rank below every item holding all of them.
            let floor = hits.last().map(|h| h.score * 0.5).unwrap_or(1.0);
            let some = self.matching(search, false).await?;
            let more: Vec<HitRow> = some
                .into_iter()
                .filter(|r| !hits.iter().any(|h| h.id == r.id))
                .collect();
            hits.extend(scored(more, floor));
            hits.truncate(search.limit as usize);
        }
        Ok(hits)
    }

    /// The items holding every word (`all`) or any word of the search, ranked.
    async fn matching(&self, search: &Search, all: bool) -> StoreResult<Vec<HitRow>> {
        // The words hold only letters and digits (`search_terms`), so quoting each one
        // (FTS5) or joining them with `&`/`|` (tsquery) cannot form any other query syntax.
        let expr = match (self.db, all) {
            (Db::Sqlite(..), true) => search
                .terms
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(" "),
            (Db::Sqlite(..), false) => search
                .terms
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(" OR "),
            (Db::Postgres(..), true) => search.terms.join(" & "),
            (Db::Postgres(..), false) => search.terms.join(" | "),
        };
        Ok(with_db_sql!(self.db, pool, sql = (SQLITE_SEARCH, POSTGRES_SEARCH) =>
            sqlx::query_as(sql).bind(self.org).bind(expr).bind(search.project_id).bind(Json(&search.tags))
                .bind(search.limit).fetch_all(pool).await)?)
    }
}

/// Hits with scores relative to the best of `rows` and scaled to `top`: raw BM25 on SQLite
/// weighs words by statistics of the whole index (every organization's items), which the
/// numbers alone would expose.
fn scored(rows: Vec<HitRow>, top: f64) -> Vec<SearchHit> {
    let best = rows.first().map(|r| r.score).filter(|s| *s > 0.0).unwrap_or(1.0);
    rows.into_iter()
        .map(|r| SearchHit {
            id: r.id,
            title: r.title,
            tags: r.tags.0,
            source: r.source,
            project_id: r.project_id,
            score: top * r.score / best,
            snippet: r.snippet.unwrap_or_default(),
            updated_at: r.updated_at,
        })
        .collect()
}
