//! Knowledge items (issue 25): what agents know about the organization, searchable and placed
//! into runs whose context names them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::common::nullable;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

/// The largest `content`, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Search results per request at most.
pub const MAX_SEARCH_LIMIT: i64 = 100;
/// Characters of `content` a list shows.
pub const PREVIEW_CHARS: usize = 280;

/// A knowledge item with its full content.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnowledgeItem {
    pub id: Uuid,
    pub organization_id: String,
    pub title: String,
    /// Text or Markdown.
    pub content: String,
    pub tags: Vec<String>,
    pub source: Option<String>,
    pub project_id: Option<Uuid>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A knowledge item as lists show it: the start of its content and its size.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KnowledgeSummary {
    pub id: Uuid,
    pub organization_id: String,
    pub title: String,
    /// The first 280 characters of `content`.
    pub preview: String,
    pub content_bytes: i64,
    pub tags: Vec<String>,
    pub source: Option<String>,
    pub project_id: Option<Uuid>,
    pub created_by: Option<String>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `POST /api/v1/knowledge`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateKnowledge {
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub title: String,
    /// Text or Markdown, at most 1 MiB.
    #[schema(min_length = 1, pattern = r"\S")]
    pub content: String,
    #[schema(max_items = 50)]
    pub tags: Option<Vec<String>>,
    /// Where the text came from (a URL, a file path, a system's name).
    #[schema(max_length = 2000)]
    pub source: Option<String>,
    pub project_id: Option<Uuid>,
}

/// Partial update (PATCH and PUT alike): absent fields stay, `null` clears `source` or
/// `project_id`, `tags` is replaced whole.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateKnowledge {
    #[schema(min_length = 1, max_length = 500, pattern = r"\S")]
    pub title: Option<String>,
    #[schema(min_length = 1, pattern = r"\S")]
    pub content: Option<String>,
    #[schema(max_items = 50)]
    pub tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub source: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    pub project_id: Option<Option<Uuid>>,
}

fn check(v: &mut Issues, title: Option<&str>, content: Option<&str>, tags: Option<&[String]>, source: Option<&str>) {
    if let Some(title) = title {
        v.length("title", title, 1, 500);
    }
    if let Some(content) = content {
        v.check(!content.trim().is_empty(), "content", "must not be empty");
        v.check(
            content.len() <= MAX_CONTENT_BYTES,
            "content",
            format!("must be at most {MAX_CONTENT_BYTES} bytes"),
        );
    }
    if let Some(tags) = tags {
        v.check(tags.len() <= 50, "tags", "at most 50 tags");
        v.check(
            tags.iter().all(|t| (1..=100).contains(&t.trim().chars().count())),
            "tags",
            "each tag has 1 to 100 characters",
        );
    }
    v.max_length("source", source, 2000);
}

impl CreateKnowledge {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check(
            &mut v,
            Some(&self.title),
            Some(&self.content),
            self.tags.as_deref(),
            self.source.as_deref(),
        );
        v.finish()
    }
}

impl UpdateKnowledge {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check(
            &mut v,
            self.title.as_deref(),
            self.content.as_deref(),
            self.tags.as_deref(),
            self.source.clone().flatten().as_deref(),
        );
        v.finish()
    }
}

/// Tags as stored: trimmed, each once, in the order given.
pub fn normalize_tags(tags: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = t.trim();
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    out
}

/// `GET /api/v1/knowledge/search`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to look for: the items holding all of them come first, ranked by BM25, then those
    /// holding some; blended with the items nearest in meaning when there is an embedding model.
    #[param(min_length = 1, max_length = 1000)]
    pub q: Option<String>,
    /// Comma-separated tags the items must all carry.
    pub tags: Option<String>,
    /// Results, 1..100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub project_id: Option<Uuid>,
}

/// A validated search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// The query as asked (what an embedding model reads).
    pub text: String,
    /// The query's words: letters and digits only, at most 32.
    pub terms: Vec<String>,
    pub tags: Vec<String>,
    pub limit: i64,
    pub project_id: Option<Uuid>,
}

impl SearchParams {
    pub fn validate(self) -> Result<Search, Vec<FieldIssue>> {
        let mut v = Issues::new();
        let q = self.q.unwrap_or_default();
        v.check(q.chars().count() <= 1000, "q", "must be at most 1000 characters");
        let terms = search_terms(&q);
        v.check(!terms.is_empty(), "q", "must contain at least one word");
        let tags: Vec<String> = self
            .tags
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        v.check(tags.len() <= 20, "tags", "at most 20 tags");
        let limit = self.limit.unwrap_or(20);
        v.check(
            (1..=MAX_SEARCH_LIMIT).contains(&limit),
            "limit",
            format!("must be between 1 and {MAX_SEARCH_LIMIT}"),
        );
        v.finish()?;
        Ok(Search {
            text: q.trim().to_string(),
            terms,
            tags,
            limit,
            project_id: self.project_id,
        })
    }
}

/// The words of a query: runs of letters and digits, lowercased, each once, at most 32 of
/// them. Everything else (quotes, operators, `*`, `:`) is a separator, so no query text can
/// reach the full-text engines' own query syntax.
pub fn search_terms(q: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in q.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() || word.chars().count() > 64 {
            continue;
        }
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == 32 {
            break;
        }
    }
    terms
}

wire_enum! {
    /// How a search ranked its results.
    SearchMode { FullText = "full_text", Hybrid = "hybrid" }
}

/// One result: the item, its rank and the passage that matched with the query's words
/// between `**` marks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    pub id: Uuid,
    pub title: String,
    pub tags: Vec<String>,
    pub source: Option<String>,
    pub project_id: Option<Uuid>,
    /// Relative to the best hit of this answer (1.0); higher is better.
    pub score: f64,
    pub snippet: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/v1/knowledge/search`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    pub items: Vec<SearchHit>,
    pub count: usize,
    pub mode: SearchMode,
    /// Why the search was full text only, or how many items are not embedded yet.
    pub note: Option<String>,
}

/// `POST /api/v1/executions/{id}/knowledge/search`: the knowledge skill's search tool.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ToolSearch {
    #[schema(min_length = 1, max_length = 1000)]
    pub query: String,
}

/// One result of the knowledge skill's search: the match and the start of the item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolHit {
    pub id: Uuid,
    pub title: String,
    pub source: Option<String>,
    pub snippet: String,
    /// The first 2000 characters of the content.
    pub excerpt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolSearchResults {
    pub items: Vec<ToolHit>,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_never_reaches_the_engine_syntax() {
        assert_eq!(
            search_terms(r#"payments-db "OR" NEAR(x*) :col ^2"#),
            ["payments", "db", "or", "near", "x", "col", "2"]
        );
        assert!(search_terms("\"*:^()").is_empty());
        assert_eq!(search_terms("Ünïcode Café café").len(), 2);
    }

    #[test]
    fn search_needs_a_word_and_bounds_the_limit() {
        let bad = SearchParams {
            q: Some("  ".into()),
            limit: Some(0),
            ..Default::default()
        };
        let issues = bad.validate().unwrap_err();
        assert_eq!(issues.len(), 2);
        let ok = SearchParams {
            q: Some("deploy".into()),
            tags: Some("ops, ,db".into()),
            ..Default::default()
        };
        assert_eq!(ok.validate().unwrap().tags, ["ops", "db"]);
    }
}
