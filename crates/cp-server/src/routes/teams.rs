//! `/api/v1/teams` and team membership.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::teams::{NewTeam, TeamFilter, TeamPatch};
use cp_types::team::{CreateTeam, Team, TeamStatus, UpdateTeam};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::catalog::{check_runtime, check_skill_configurations, resolve_model};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::list_cache::JsonBytes;
use crate::services::vault::{self, Named};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team, update_team, delete_team))
        .routes(routes!(add_agent, remove_agent))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "team")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TeamQuery {
    /// Only teams with this status.
    status_filter: Option<TeamStatus>,
    /// Only members of this project.
    project_id: Option<Uuid>,
}

/// Teams, newest first, each with its member agents.
#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", params(PageParams, TeamQuery),
    responses((status = 200, body = Page<Team>)))]
async fn list_teams(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<TeamQuery>,
) -> ServiceResult<JsonBytes> {
    let filter = TeamFilter {
        status: q.status_filter,
        project_id: q.project_id,
    };
    let key = format!("teams {filter:?} {page:?}");
    let load = async { Ok(state.store.teams(&auth.org_id).list(filter, page).await?) };
    state.lists.get_or_load(&state.store, &auth.org_id, key, load).await
}

/// Creates a team in the `DEFAULT` project. Members are `configuration.member_ids` (agents of
/// this organization, else 422); the model is `model_id` or `configuration.llm.model`, else
/// the organization's default.
#[utoipa::path(post, path = "/api/v1/teams", tag = "teams", request_body = CreateTeam,
    responses((status = 201, body = Team), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_team(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateTeam>,
) -> ServiceResult<(StatusCode, Json<Team>)> {
    let parts = req.validate()?;
    vault::check_may_name(
        &auth,
        &Named::of_environment(req.execution_environment.as_ref()),
        &Named::default(),
    )?;
    let requested = req.model_id.as_deref().or(parts.model.as_deref());
    let field = if req.model_id.is_some() {
        "model_id"
    } else {
        "configuration.llm.model"
    };
    let model = resolve_model(&state.store, &auth.org_id, requested, field).await?;
    let runtime = req.runtime.unwrap_or_default();
    check_runtime(runtime, &model)?;
    let new = NewTeam {
        name: req.name,
        description: req.description,
        status: req.status.unwrap_or(TeamStatus::Active),
        runtime,
        model_id: model.id,
        configuration: parts.rest,
        member_ids: parts.member_ids.unwrap_or_default(),
        execution_environment: req.execution_environment.unwrap_or_default(),
        environment_ids: req.environment_ids.unwrap_or_default(),
        skill_ids: req.skill_ids.unwrap_or_default(),
        skill_configurations: req.skill_configurations.unwrap_or_default(),
    };
    check_skill_configurations(&new.skill_ids, &new.skill_configurations)?;
    let team = state.store.teams(&auth.org_id).create(&new).await?;
    Ok((StatusCode::CREATED, Json(team)))
}

#[utoipa::path(get, path = "/api/v1/teams/{id}", tag = "teams", params(("id" = Uuid, Path)),
    responses((status = 200, body = Team), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_team(State(state): State<AppState>, auth: Auth<Read>, Path(id): Path<Uuid>) -> ServiceResult<Json<Team>> {
    Ok(Json(state.store.teams(&auth.org_id).get(id).await.map_err(not_found)?))
}

/// Partial update (PATCH and PUT alike). A given `configuration` replaces the stored one, except
/// that members and model only change when it names them.
#[utoipa::path(method(patch, put), path = "/api/v1/teams/{id}", tag = "teams", params(("id" = Uuid, Path)),
    request_body = UpdateTeam, responses((status = 200, body = Team), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_team(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateTeam>,
) -> ServiceResult<Json<Team>> {
    let parts = req.validate()?;
    let teams = state.store.teams(&auth.org_id);
    let current = teams.get(id).await.map_err(not_found)?;
    vault::check_may_name(
        &auth,
        &Named::of_environment(req.execution_environment.as_ref()),
        &Named::of_environment(Some(&current.execution_environment)),
    )?;
    let requested = req
        .model_id
        .as_deref()
        .or(parts.as_ref().and_then(|p| p.model.as_deref()));
    let mut model_id = None;
    if requested.is_some() || req.runtime.is_some() {
        let field = if req.model_id.is_some() {
            "model_id"
        } else {
            "configuration.llm.model"
        };
        let name = requested.or(current.model_id.as_deref());
        let model = resolve_model(&state.store, &auth.org_id, name, field).await?;
        check_runtime(req.runtime.unwrap_or(current.runtime), &model)?;
        model_id = Some(model.id);
    }
    if let Some(configs) = &req.skill_configurations {
        let skills = req.skill_ids.as_ref().unwrap_or(&current.skill_ids);
        check_skill_configurations(skills, configs)?;
    }
    let (configuration, member_ids) = match parts {
        Some(p) => (Some(p.rest), p.member_ids),
        None => (None, None),
    };
    let patch = TeamPatch {
        name: req.name,
        description: req.description,
        status: req.status,
        runtime: req.runtime,
        model_id,
        configuration,
        member_ids,
        execution_environment: req.execution_environment,
        environment_ids: req.environment_ids,
        skill_ids: req.skill_ids,
        skill_configurations: req.skill_configurations,
    };
    Ok(Json(teams.update(id, &patch).await.map_err(not_found)?))
}

#[utoipa::path(delete, path = "/api/v1/teams/{id}", tag = "teams", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_team(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state.store.teams(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

/// Adds an agent to `configuration.member_ids` (at the end; no change if already a member).
#[utoipa::path(post, path = "/api/v1/teams/{id}/agents/{agent_id}", tag = "teams",
    params(("id" = Uuid, Path), ("agent_id" = Uuid, Path)),
    responses((status = 200, body = Team), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn add_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((id, agent_id)): Path<(Uuid, Uuid)>,
) -> ServiceResult<Json<Team>> {
    if !state.store.agents(&auth.org_id).exists(agent_id).await? {
        return Err(ServiceError::not_found("agent"));
    }
    Ok(Json(
        state
            .store
            .teams(&auth.org_id)
            .add_member(id, agent_id)
            .await
            .map_err(not_found)?,
    ))
}

/// Removes an agent from `configuration.member_ids` (404 if it is not a member).
#[utoipa::path(delete, path = "/api/v1/teams/{id}/agents/{agent_id}", tag = "teams",
    params(("id" = Uuid, Path), ("agent_id" = Uuid, Path)),
    responses((status = 200, body = Team), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn remove_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((id, agent_id)): Path<(Uuid, Uuid)>,
) -> ServiceResult<Json<Team>> {
    let team = state.store.teams(&auth.org_id).remove_member(id, agent_id).await;
    Ok(Json(team.map_err(|e| ServiceError::from_store(e, "team membership"))?))
}
