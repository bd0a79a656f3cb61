//! `/api/v1/execution-environment/{agents|teams}/{id}/resolved`: what a run of the agent or
//! team would get, for admins, with every secret and credential value masked.

use axum::Json;
use axum::extract::State;
use cp_types::exec_env::ResolvedExecutionEnvironment;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Admin, Auth, Path};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::exec_env::{Target, resolve};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resolved_agent_environment))
        .routes(routes!(resolved_team_environment))
}

async fn masked(
    state: &AppState,
    org: &str,
    target: Target,
    what: &str,
) -> ServiceResult<ResolvedExecutionEnvironment> {
    // No audit entry: nothing secret leaves the server through this view.
    let env = resolve(&state.store, &state.config.master_key, org, target, None)
        .await
        .map_err(|e| ServiceError::from_store(e, what))?;
    Ok(env.masked())
}

/// The agent's environments (in order) merged with its own execution environment; secret
/// and credential values masked.
#[utoipa::path(get, path = "/api/v1/execution-environment/agents/{id}/resolved", tag = "execution-environment",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ResolvedExecutionEnvironment), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolved_agent_environment(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<ResolvedExecutionEnvironment>> {
    Ok(Json(masked(&state, &auth.org_id, Target::Agent(id), "agent").await?))
}

/// The team's environments (in order) merged with its own execution environment; secret and
/// credential values masked.
#[utoipa::path(get, path = "/api/v1/execution-environment/teams/{id}/resolved", tag = "execution-environment",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ResolvedExecutionEnvironment), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolved_team_environment(
    State(state): State<AppState>,
    auth: Auth<Admin>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<ResolvedExecutionEnvironment>> {
    Ok(Json(masked(&state, &auth.org_id, Target::Team(id), "team").await?))
}
