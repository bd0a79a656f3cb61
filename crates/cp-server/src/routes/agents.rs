//! `/api/v1/agents`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::agents::{AgentFilter, AgentPatch, NewAgent};
use cp_types::agent::{Agent, AgentStatus, CreateAgent, UpdateAgent, requested_model};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use serde_json::json;
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
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "agent")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AgentQuery {
    /// Only agents with this status.
    status_filter: Option<AgentStatus>,
    /// Only members of this team.
    team_id: Option<Uuid>,
    /// Only members of this project.
    project_id: Option<Uuid>,
    /// Only agents linked to this environment.
    environment_id: Option<Uuid>,
}

/// Agents, newest first, each with its projects, environments and skills.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(PageParams, AgentQuery),
    responses((status = 200, body = Page<Agent>)))]
async fn list_agents(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<AgentQuery>,
) -> ServiceResult<JsonBytes> {
    let filter = AgentFilter {
        status: q.status_filter,
        team_id: q.team_id,
        project_id: q.project_id,
        environment_id: q.environment_id,
    };
    let key = format!("agents {filter:?} {page:?}");
    let load = async { Ok(state.store.agents(&auth.org_id).list(filter, page).await?) };
    state.lists.get_or_load(&state.store, &auth.org_id, key, load).await
}

/// Creates an agent in the `DEFAULT` project. Without a model it gets the organization's
/// default model; the runtime must accept the model (422 on `runtime`).
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = Agent), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateAgent>,
) -> ServiceResult<(StatusCode, Json<Agent>)> {
    req.validate()?;
    vault::check_may_name(
        &auth,
        &Named::of_environment(req.execution_environment.as_ref()),
        &Named::default(),
    )?;
    let model = resolve_model(
        &state.store,
        &auth.org_id,
        requested_model(&req.model, &req.model_id),
        "model_id",
    )
    .await?;
    let runtime = req.runtime.unwrap_or_default();
    check_runtime(runtime, &model)?;
    let new = NewAgent {
        name: req.name.clone(),
        description: req.description.clone(),
        system_prompt: req.effective_system_prompt(),
        status: req.status.unwrap_or(AgentStatus::Idle),
        runtime,
        model_id: model.id,
        llm_config: req.llm_config.clone().unwrap_or_else(|| json!({})),
        capabilities: req.capabilities.clone().unwrap_or_default(),
        configuration: req.configuration.clone().unwrap_or_else(|| json!({})),
        runner_name: req.runner_name.clone(),
        execution_environment: req.execution_environment.clone().unwrap_or_default(),
        team_id: req.team_id,
        environment_ids: req.environment_ids.clone().unwrap_or_default(),
        skill_ids: req.skill_ids.clone().unwrap_or_default(),
        skill_configurations: req.skill_configurations.clone().unwrap_or_default(),
    };
    check_skill_configurations(&new.skill_ids, &new.skill_configurations)?;
    let agent = state.store.agents(&auth.org_id).create(&new).await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = Uuid, Path)),
    responses((status = 200, body = Agent), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_agent(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Agent>> {
    Ok(Json(state.store.agents(&auth.org_id).get(id).await.map_err(not_found)?))
}

/// Partial update (PATCH and PUT alike). Changing the model or the runtime re-checks the
/// runtime rules; `environment_ids` and `skill_ids` replace the links.
#[utoipa::path(method(patch, put), path = "/api/v1/agents/{id}", tag = "agents", params(("id" = Uuid, Path)),
    request_body = UpdateAgent, responses((status = 200, body = Agent), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateAgent>,
) -> ServiceResult<Json<Agent>> {
    req.validate()?;
    let agents = state.store.agents(&auth.org_id);
    let current = agents.get(id).await.map_err(not_found)?;
    vault::check_may_name(
        &auth,
        &Named::of_environment(req.execution_environment.as_ref()),
        &Named::of_environment(Some(&current.execution_environment)),
    )?;
    let requested = requested_model(&req.model, &req.model_id);
    let mut model_id = None;
    if requested.is_some() || req.runtime.is_some() {
        let name = requested.or(current.model_id.as_deref());
        let model = resolve_model(&state.store, &auth.org_id, name, "model_id").await?;
        check_runtime(req.runtime.unwrap_or(current.runtime), &model)?;
        model_id = Some(model.id);
    }
    if let Some(configs) = &req.skill_configurations {
        let skills = req.skill_ids.as_ref().unwrap_or(&current.skill_ids);
        check_skill_configurations(skills, configs)?;
    }
    let patch = AgentPatch {
        name: req.name,
        description: req.description,
        system_prompt: req.system_prompt,
        status: req.status,
        runtime: req.runtime,
        model_id,
        llm_config: req.llm_config,
        capabilities: req.capabilities,
        configuration: req.configuration,
        runner_name: req.runner_name,
        execution_environment: req.execution_environment,
        state: req.state,
        error_message: req.error_message,
        environment_ids: req.environment_ids,
        skill_ids: req.skill_ids,
        skill_configurations: req.skill_configurations,
    };
    Ok(Json(agents.update(id, &patch).await.map_err(not_found)?))
}

/// Deletes the agent and removes it from its teams, projects and skill associations.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state.store.agents(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}
