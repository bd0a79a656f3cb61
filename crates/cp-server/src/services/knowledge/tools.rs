//! The knowledge skill's tools, run for a live execution. A worker's key reads the
//! organization's knowledge and graph only this way: for a run it holds, whose agent (or team)
//! has an enabled knowledge skill giving that tool.

use cp_types::graph::QueryResult;
use cp_types::knowledge::{Search, ToolHit, ToolSearchResults, search_terms};
use cp_types::skill::{ResolvedSkill, SkillType};
use serde_json::Value;
use uuid::Uuid;

use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::graph;
use crate::services::workflow_runs::{execution_skills, live_execution};
use crate::state::AppState;

/// Characters of an item's content a search result carries.
const EXCERPT_CHARS: usize = 2000;

/// The configuration of the first enabled knowledge skill of the execution whose `flag` is on.
async fn skill_with(state: &AppState, caller: &Caller, execution: Uuid, flag: &str) -> ServiceResult<Value> {
    let execution = live_execution(state, caller, execution).await?;
    let skills: Vec<ResolvedSkill> = execution_skills(state, &caller.org_id, &execution).await?;
    skills
        .into_iter()
        .find(|s| s.enabled && s.skill_type == SkillType::Knowledge && s.configuration[flag].as_bool().unwrap_or(true))
        .map(|s| s.configuration)
        .ok_or_else(|| ServiceError::forbidden(format!("the execution's agent has no knowledge skill with {flag}")))
}

/// `search_knowledge`: the best matches of `query` among the items carrying the skill's tags.
pub async fn search(
    state: &AppState,
    caller: &Caller,
    execution: Uuid,
    query: &str,
) -> ServiceResult<ToolSearchResults> {
    let config = skill_with(state, caller, execution, "enable_search").await?;
    let terms = search_terms(query);
    if terms.is_empty() {
        return Err(ServiceError::invalid("query", "must contain at least one word"));
    }
    let search = Search {
        text: query.trim().to_string(),
        terms,
        tags: config["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
        limit: config["max_results"].as_i64().unwrap_or(5).clamp(1, 20),
        project_id: None,
    };
    let hits = super::search(state, caller, search).await?.items;
    let knowledge = state.store.knowledge(&caller.org_id);
    let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
    let items = knowledge.get_many(&ids, EXCERPT_CHARS as i64).await?;
    let items: Vec<ToolHit> = hits
        .into_iter()
        .map(|h| ToolHit {
            excerpt: items
                .iter()
                .find(|i| i.id == h.id)
                .map(|i| i.content.clone())
                .unwrap_or_default(),
            id: h.id,
            title: h.title,
            source: h.source,
            snippet: h.snippet,
        })
        .collect();
    Ok(ToolSearchResults {
        count: items.len(),
        items,
    })
}

/// `query_graph`: a read-only Cypher query over the organization's context graph.
pub async fn query_graph(
    state: &AppState,
    caller: &Caller,
    execution: Uuid,
    cypher: &str,
) -> ServiceResult<QueryResult> {
    skill_with(state, caller, execution, "enable_graph_query").await?;
    graph::query(state, caller, cypher).await
}
