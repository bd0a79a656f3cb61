//! Agents and teams: lists, a detail page with recent runs, forms to create, edit and execute.

use axum::extract::State;
use axum::response::Response;
use cp_store::agents::AgentFilter;
use cp_store::executions::ExecutionFilter;
use cp_store::models::ModelFilter;
use cp_store::skills::SkillFilter;
use cp_store::teams::TeamFilter;
use cp_types::agent::AgentStatus;
use cp_types::org::Role;
use cp_types::page::PageRequest;
use minijinja::context;
use serde::Deserialize;
use uuid::Uuid;

use super::{PageNumber, keep, pager};
use crate::http::{Auth, Path, Query, Read};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;
use crate::ui::render;

/// The most options a form's select offers (models, skills, queues).
const OPTIONS: PageRequest = PageRequest { limit: 500, offset: 0 };
/// Recent runs on a detail page.
const RECENT: PageRequest = PageRequest { limit: 20, offset: 0 };

/// What the create and edit forms choose from: enabled models, skills and worker queues.
struct Choices {
    models: minijinja::Value,
    skills: minijinja::Value,
    queues: minijinja::Value,
}

/// Only the forms use them, so a viewer's page reads none.
async fn choices(state: &AppState, caller: &Caller) -> ServiceResult<Choices> {
    if !matches!(caller.role, Role::Admin | Role::Member) {
        let none = minijinja::Value::from_serialize(Vec::<()>::new());
        return Ok(Choices {
            models: none.clone(),
            skills: none.clone(),
            queues: none,
        });
    }
    let org = caller.org_id.as_str();
    let enabled = ModelFilter {
        enabled_only: true,
        ..Default::default()
    };
    let models = state.store.models(org);
    let skills = state.store.skills(org);
    let queues = state.store.worker_queues(org);
    let (models, skills, queues) = tokio::try_join!(
        models.list(&enabled, OPTIONS),
        skills.list(SkillFilter::default(), OPTIONS),
        queues.list(None, OPTIONS),
    )?;
    Ok(Choices {
        models: minijinja::Value::from_serialize(&models.items),
        skills: minijinja::Value::from_serialize(&skills.items),
        queues: minijinja::Value::from_serialize(&queues.items),
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct AgentsQuery {
    #[serde(default, deserialize_with = "super::blank")]
    status: Option<AgentStatus>,
    page: Option<u32>,
}

/// `/agents`.
pub async fn agents(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<AgentsQuery>,
) -> ServiceResult<Response> {
    let at = PageNumber { page: q.page };
    let filter = AgentFilter {
        status: q.status,
        ..Default::default()
    };
    let agents = state.store.agents(&auth.org_id);
    let (page, choices) = tokio::try_join!(
        async { Ok(agents.list(filter, at.request()).await?) },
        choices(&state, &auth)
    )?;
    render::page(
        &auth,
        "agents.html",
        "agents",
        context! {
            title => "Agents", pager => pager(&page, &at), agents => page.items,
            status => q.status.map(|s| s.as_str()), statuses => AgentStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            keep => keep(&[("status", q.status.map(|s| s.as_str().to_owned()))]),
            models => choices.models, skills => choices.skills,
        },
    )
}

/// `/agents/{id}`.
pub async fn agent(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let runs = ExecutionFilter {
        entity_id: Some(id),
        ..Default::default()
    };
    let agents = state.store.agents(org);
    let executions = state.store.executions(org);
    let (agent, recent, choices) = tokio::try_join!(
        async { agents.get(id).await.map_err(|e| ServiceError::from_store(e, "agent")) },
        async { Ok(executions.list(runs, RECENT).await?) },
        choices(&state, &auth),
    )?;
    render::page(
        &auth,
        "agent.html",
        "agents",
        context! {
            title => agent.name.clone(), agent, recent => recent.items, recent_total => recent.total,
            models => choices.models, skills => choices.skills, queues => choices.queues,
            statuses => AgentStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    )
}

/// `/teams`.
pub async fn teams(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<PageNumber>,
) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let teams = state.store.teams(org);
    let agents = state.store.agents(org);
    let (page, members, choices) = tokio::try_join!(
        async { Ok(teams.list(TeamFilter::default(), q.request()).await?) },
        async { Ok(agents.list(AgentFilter::default(), OPTIONS).await?) },
        choices(&state, &auth),
    )?;
    render::page(
        &auth,
        "teams.html",
        "teams",
        context! {
            title => "Teams", pager => pager(&page, &q), teams => page.items, keep => "",
            agents => members.items, models => choices.models, skills => choices.skills,
        },
    )
}

/// `/teams/{id}`.
pub async fn team(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Response> {
    let org = auth.org_id.as_str();
    let runs = ExecutionFilter {
        entity_id: Some(id),
        ..Default::default()
    };
    let teams = state.store.teams(org);
    let executions = state.store.executions(org);
    let agents = state.store.agents(org);
    let (team, recent, members, choices) = tokio::try_join!(
        async { teams.get(id).await.map_err(|e| ServiceError::from_store(e, "team")) },
        async { Ok(executions.list(runs, RECENT).await?) },
        async { Ok(agents.list(AgentFilter::default(), OPTIONS).await?) },
        choices(&state, &auth),
    )?;
    // The edit form sends the configuration back whole (an update replaces it) with the
    // members as checked.
    let mut configuration = team.configuration.clone();
    if let Some(c) = configuration.as_object_mut() {
        c.remove("member_ids");
    }
    let member_ids: Vec<Uuid> = team.agents.iter().map(|a| a.id).collect();
    render::page(
        &auth,
        "team.html",
        "teams",
        context! {
            title => team.name.clone(), recent => recent.items, recent_total => recent.total,
            configuration => serde_json::to_string(&configuration).unwrap_or_else(|_| "{}".into()),
            member_ids, agents => members.items, models => choices.models, skills => choices.skills,
            queues => choices.queues, team,
        },
    )
}
