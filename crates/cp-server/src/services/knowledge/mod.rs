//! Knowledge items: the writes (with the project they name checked), search, the ids a
//! context may name, and what a run's context brings into its instructions (`run`).

pub mod embeddings;
pub mod run;
pub mod tools;

use std::collections::{HashMap, HashSet};

use cp_store::knowledge::KnowledgeDraft;
use cp_types::FieldIssue;
use cp_types::context::UpdateContext;
use cp_types::knowledge::{
    CreateKnowledge, KnowledgeItem, PREVIEW_CHARS, Search, SearchHit, SearchMode, SearchResults, UpdateKnowledge,
    normalize_tags,
};
use uuid::Uuid;

use super::caller::Caller;
use super::error::{ServiceError, ServiceResult, or_not_found};
use crate::state::AppState;

pub async fn create(state: &AppState, caller: &Caller, req: CreateKnowledge) -> ServiceResult<KnowledgeItem> {
    req.validate()?;
    let draft = KnowledgeDraft {
        title: req.title,
        content: req.content,
        tags: normalize_tags(req.tags.unwrap_or_default()),
        source: req.source,
        project_id: req.project_id,
    };
    check_project(state, &caller.org_id, draft.project_id).await?;
    let by = caller.key_id.to_string();
    let item = state.store.knowledge(&caller.org_id).create(&draft, Some(&by)).await?;
    state.embedders.wake(&caller.org_id);
    Ok(item)
}

pub async fn update(state: &AppState, caller: &Caller, id: Uuid, req: UpdateKnowledge) -> ServiceResult<KnowledgeItem> {
    req.validate()?;
    let items = state.store.knowledge(&caller.org_id);
    let current = items.get(id).await.map_err(or_not_found("knowledge item"))?;
    let draft = KnowledgeDraft {
        title: req.title.unwrap_or(current.title),
        content: req.content.unwrap_or(current.content),
        tags: req.tags.map(normalize_tags).unwrap_or(current.tags),
        source: req.source.unwrap_or(current.source),
        project_id: req.project_id.unwrap_or(current.project_id),
    };
    if draft.project_id != current.project_id {
        check_project(state, &caller.org_id, draft.project_id).await?;
    }
    let item = items.update(id, &draft).await.map_err(or_not_found("knowledge item"))?;
    state.embedders.wake(&caller.org_id);
    Ok(item)
}

async fn check_project(state: &AppState, org: &str, project: Option<Uuid>) -> ServiceResult<()> {
    if let Some(p) = project {
        state.store.projects(org).get(p).await.map_err(|e| match e {
            cp_store::StoreError::NotFound => {
                ServiceError::invalid("project_id", format!("no project {p} in this organization"))
            }
            e => e.into(),
        })?;
    }
    Ok(())
}

/// How deep each ranking is read before they are blended: three per result asked for, within
/// these bounds (highlighting passages is most of full-text search's cost).
const FUSED_DEPTH: std::ops::RangeInclusive<i64> = 30..=100;
/// Reciprocal rank fusion's constant: an item's blended score is the sum over the rankings of
/// 1 / (K + its rank there).
const RRF_K: f64 = 60.0;
/// Search: BM25 alone, or blended with the nearest vectors when the organization has an
/// embedding model (`mode` says which, `note` why not or what is not embedded yet).
pub async fn search(state: &AppState, caller: &Caller, search: Search) -> ServiceResult<SearchResults> {
    let items = state.store.knowledge(&caller.org_id);
    let embedder = match embeddings::embedder(state, caller).await {
        Ok(Ok(e)) => e,
        Ok(Err(why)) => return full_text(state, caller, &search, why).await,
        Err(e) => {
            tracing::error!(org = %caller.org_id, code = ?e.code, "cannot reach the embedding model");
            let why = "the server cannot reach the embedding model".to_string();
            return full_text(state, caller, &search, why).await;
        }
    };
    let query = match embedder.embed_query(&search.text).await {
        Ok(v) => v,
        Err(why) => {
            let why = format!("the embedding model {} failed ({why})", embedder.model.value);
            return full_text(state, caller, &search, why).await;
        }
    };
    let depth = Search {
        limit: (search.limit * 3).clamp(*FUSED_DEPTH.start(), *FUSED_DEPTH.end()),
        ..search.clone()
    };
    // Counted before the scan: vectors saved meanwhile must not make the note say none waits
    // while the scan missed them.
    let (embedded, total) = items.embedding_coverage(&embedder.space).await?;
    let lexical = items.search(&depth).await?;
    let semantic = items
        .nearest(&embedder.space, &query, &search, depth.limit as usize)
        .await?;
    let mut fused: HashMap<uuid::Uuid, f64> = HashMap::new();
    let ranks = lexical
        .iter()
        .map(|h| h.id)
        .enumerate()
        .chain(semantic.iter().map(|h| h.id).enumerate());
    for (rank, id) in ranks {
        *fused.entry(id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
    }
    let mut order: Vec<(uuid::Uuid, f64)> = fused.into_iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    order.truncate(search.limit as usize);
    // Items found by meaning alone show their opening instead of a matched passage.
    let unmatched: Vec<uuid::Uuid> = order
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !lexical.iter().any(|h| h.id == *id))
        .collect();
    let openings = items.get_many(&unmatched, PREVIEW_CHARS as i64).await?;
    let best = order.first().map_or(1.0, |(_, s)| *s);
    let mut lexical: HashMap<uuid::Uuid, SearchHit> = lexical.into_iter().map(|h| (h.id, h)).collect();
    let hits: Vec<SearchHit> = order
        .into_iter()
        .filter_map(|(id, score)| {
            let hit = lexical.remove(&id).or_else(|| {
                openings.iter().find(|i| i.id == id).map(|i| SearchHit {
                    id,
                    title: i.title.clone(),
                    tags: i.tags.clone(),
                    source: i.source.clone(),
                    project_id: i.project_id,
                    score: 0.0,
                    snippet: i.content.clone(),
                    updated_at: i.updated_at,
                })
            })?;
            Some(SearchHit {
                score: score / best,
                ..hit
            })
        })
        .collect();
    let note = (embedded < total).then(|| {
        format!(
            "{} of {total} items are not embedded yet: they rank by their words alone",
            total - embedded
        )
    });
    Ok(SearchResults {
        count: hits.len(),
        items: hits,
        mode: SearchMode::Hybrid,
        note,
    })
}

/// BM25 alone, with the reason.
async fn full_text(state: &AppState, caller: &Caller, search: &Search, why: String) -> ServiceResult<SearchResults> {
    let items = state.store.knowledge(&caller.org_id).search(search).await?;
    Ok(SearchResults {
        count: items.len(),
        items,
        mode: SearchMode::FullText,
        note: Some(format!("full-text ranking only: {why}")),
    })
}

/// A context may name only the organization's knowledge items (`knowledge_uuids`) and graph
/// nodes (`resource_ids`), by id: anything else is a 422 naming the first entry at fault.
pub async fn check_context_refs(state: &AppState, org: &str, req: &UpdateContext) -> ServiceResult<()> {
    let mut issues = Vec::new();
    if let Some(list) = &req.knowledge_uuids {
        let found = |ids: Vec<Uuid>| async move { state.store.knowledge(org).existing(&ids).await };
        if let Some(issue) = first_unknown("knowledge_uuids", list, "knowledge item", found).await? {
            issues.push(issue);
        }
    }
    if let Some(list) = &req.resource_ids {
        let found = |ids: Vec<Uuid>| async move { state.store.graph(org).existing(&ids).await };
        if let Some(issue) = first_unknown("resource_ids", list, "graph node", found).await? {
            issues.push(issue);
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::validation(issues))
    }
}

/// The first entry of `list` that is not an id `found` knows.
async fn first_unknown<F, Fut>(field: &str, list: &[String], what: &str, found: F) -> ServiceResult<Option<FieldIssue>>
where
    F: FnOnce(Vec<Uuid>) -> Fut,
    Fut: std::future::Future<Output = cp_store::StoreResult<Vec<Uuid>>>,
{
    let mut ids = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        match Uuid::parse_str(entry.trim()) {
            Ok(id) => ids.push(id),
            Err(_) => {
                return Ok(Some(FieldIssue::new(
                    format!("{field}[{i}]"),
                    format!("must be the id of a {what}"),
                )));
            }
        }
    }
    let known: HashSet<Uuid> = found(ids.clone()).await?.into_iter().collect();
    Ok(ids.iter().position(|id| !known.contains(id)).map(|i| {
        FieldIssue::new(
            format!("{field}[{i}]"),
            format!("no {what} {} in this organization", ids[i]),
        )
    }))
}
