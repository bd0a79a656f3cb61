//! `/api/v1/projects` and project membership.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cp_store::projects::ProjectFilter;
use cp_types::project::{
    AddProjectAgent, AddProjectTeam, CreateProject, MemberKind, Project, ProjectMember, ProjectStatus, UpdateProject,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::list_cache::JsonBytes;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(default_project))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(list_agents, add_agent))
        .routes(routes!(remove_agent))
        .routes(routes!(list_teams, add_team))
        .routes(routes!(remove_team))
}

fn not_found(e: cp_store::StoreError) -> ServiceError {
    ServiceError::from_store(e, "project")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ProjectQuery {
    /// Only projects with this status.
    status_filter: Option<ProjectStatus>,
}

/// Projects, newest first, each with its agent and team counts.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(PageParams, ProjectQuery),
    responses((status = 200, body = Page<Project>)))]
async fn list_projects(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<ProjectQuery>,
) -> ServiceResult<JsonBytes> {
    let filter = ProjectFilter {
        status: q.status_filter,
    };
    // Project and membership writes move the catalog version, so a cached page is current.
    let key = format!("projects {filter:?} {page:?}");
    let load = async { Ok(state.store.projects(&auth.org_id).list(filter, page).await?) };
    state.lists.get_or_load(&state.store, &auth.org_id, key, load).await
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 409, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_project(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateProject>,
) -> ServiceResult<(StatusCode, Json<Project>)> {
    req.validate()?;
    let project = state.store.projects(&auth.org_id).create(&req).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// The organization's `DEFAULT` project, which every new agent and team joins.
#[utoipa::path(get, path = "/api/v1/projects/default", tag = "projects", responses((status = 200, body = Project)))]
async fn default_project(State(state): State<AppState>, auth: Auth<Read>) -> ServiceResult<Json<Project>> {
    Ok(Json(
        state
            .store
            .projects(&auth.org_id)
            .get_default()
            .await
            .map_err(not_found)?,
    ))
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 200, body = Project), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_project(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Project>> {
    Ok(Json(
        state.store.projects(&auth.org_id).get(id).await.map_err(not_found)?,
    ))
}

/// Partial update (PATCH and PUT alike): fields left out stay as they are.
#[utoipa::path(method(patch, put), path = "/api/v1/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    request_body = UpdateProject, responses((status = 200, body = Project)))]
async fn update_project(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateProject>,
) -> ServiceResult<Json<Project>> {
    req.validate()?;
    Ok(Json(
        state
            .store
            .projects(&auth.org_id)
            .update(id, &req)
            .await
            .map_err(not_found)?,
    ))
}

/// Deletes a project (not the `DEFAULT` one: 409).
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_project(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state.store.projects(&auth.org_id).delete(id).await.map_err(not_found)?;
    Ok(Json(Deleted::new(id)))
}

async fn add_member(
    state: &AppState,
    auth: &Auth<Write>,
    project_id: Uuid,
    kind: MemberKind,
    member_id: Uuid,
    role: Option<&str>,
) -> ServiceResult<(StatusCode, Json<ProjectMember>)> {
    let projects = state.store.projects(&auth.org_id);
    let member = projects
        .add_member(project_id, kind, member_id, role, Some(&auth.key_name))
        .await
        .map_err(|e| ServiceError::from_store(e, &format!("project or {kind}")))?;
    Ok((StatusCode::CREATED, Json(member)))
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/agents", tag = "projects", params(("id" = Uuid, Path)),
    request_body = AddProjectAgent, responses((status = 201, body = ProjectMember), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn add_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<AddProjectAgent>,
) -> ServiceResult<(StatusCode, Json<ProjectMember>)> {
    add_member(&state, &auth, id, MemberKind::Agent, req.agent_id, req.role.as_deref()).await
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/agents", tag = "projects", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ProjectMember>)))]
async fn list_agents(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<ProjectMember>>> {
    let members = state
        .store
        .projects(&auth.org_id)
        .list_members(id, MemberKind::Agent, page)
        .await;
    Ok(Json(members.map_err(not_found)?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{id}/agents/{agent_id}", tag = "projects",
    params(("id" = Uuid, Path), ("agent_id" = Uuid, Path)), responses((status = 200, body = Deleted)))]
async fn remove_agent(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((id, agent_id)): Path<(Uuid, Uuid)>,
) -> ServiceResult<Json<Deleted>> {
    let removed = state
        .store
        .projects(&auth.org_id)
        .remove_member(id, MemberKind::Agent, agent_id)
        .await;
    removed.map_err(|e| ServiceError::from_store(e, "project membership"))?;
    Ok(Json(Deleted::new(agent_id)))
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/teams", tag = "projects", params(("id" = Uuid, Path)),
    request_body = AddProjectTeam, responses((status = 201, body = ProjectMember), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn add_team(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<AddProjectTeam>,
) -> ServiceResult<(StatusCode, Json<ProjectMember>)> {
    add_member(&state, &auth, id, MemberKind::Team, req.team_id, req.role.as_deref()).await
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/teams", tag = "projects", params(("id" = Uuid, Path), PageParams),
    responses((status = 200, body = Page<ProjectMember>)))]
async fn list_teams(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Pagination(page): Pagination,
) -> ServiceResult<Json<Page<ProjectMember>>> {
    let members = state
        .store
        .projects(&auth.org_id)
        .list_members(id, MemberKind::Team, page)
        .await;
    Ok(Json(members.map_err(not_found)?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{id}/teams/{team_id}", tag = "projects",
    params(("id" = Uuid, Path), ("team_id" = Uuid, Path)), responses((status = 200, body = Deleted)))]
async fn remove_team(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((id, team_id)): Path<(Uuid, Uuid)>,
) -> ServiceResult<Json<Deleted>> {
    let removed = state
        .store
        .projects(&auth.org_id)
        .remove_member(id, MemberKind::Team, team_id)
        .await;
    removed.map_err(|e| ServiceError::from_store(e, "project membership"))?;
    Ok(Json(Deleted::new(team_id)))
}
