//! Knowledge items: the writes (with the project they name checked) and search.

use cp_store::knowledge::KnowledgeDraft;
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
