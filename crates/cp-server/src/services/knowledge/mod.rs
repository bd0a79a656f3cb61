//! Knowledge items: the writes (with the project they name checked), search, the ids a
//! context may name, and what a run's context brings into its instructions (`run`).

pub mod run;
pub mod tools;

use std::collections::HashSet;

use cp_store::knowledge::KnowledgeDraft;
use cp_types::FieldIssue;
use cp_types::context::UpdateContext;
use cp_types::knowledge::{
    CreateKnowledge, KnowledgeItem, Search, SearchMode, SearchResults, UpdateKnowledge, normalize_tags,
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
    Ok(state.store.knowledge(&caller.org_id).create(&draft, Some(&by)).await?)
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
    items.update(id, &draft).await.map_err(or_not_found("knowledge item"))
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

/// Full-text search, ranked by BM25.
pub async fn search(state: &AppState, caller: &Caller, search: Search) -> ServiceResult<SearchResults> {
    let items = state.store.knowledge(&caller.org_id).search(&search).await?;
    Ok(SearchResults {
        count: items.len(),
        items,
        mode: SearchMode::FullText,
        note: Some("full-text ranking only: the organization has no enabled embedding model".into()),
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
