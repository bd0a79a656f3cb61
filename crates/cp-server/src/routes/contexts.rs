//! `/api/v1/context/{entity_type}/{entity_id}`, its resolution, and the agent and team shortcuts.

use axum::Json;
use axum::extract::State;
use cp_types::Deleted;
use cp_types::context::{Context, ContextEntity, ContextEntityType, ResolvedContext, UpdateContext};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{ApiError, ApiResult, Auth, JsonBody, Path, Read, Write};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_context, update_context, delete_context))
        .routes(routes!(resolve_context))
        .routes(routes!(resolve_agent_context))
        .routes(routes!(resolve_team_context))
}

/// Reads `{entity_type}/{entity_id}`: an unknown type is a 422 naming the allowed ones, an id
/// that is not a UUID (for every type but the organization) a 400.
pub(crate) fn entity(entity_type: &str, entity_id: &str) -> ApiResult<ContextEntity> {
    let kind: ContextEntityType = entity_type
        .parse()
        .map_err(|issue: String| ApiError::invalid("entity_type", issue))?;
    ContextEntity::parse(kind, entity_id).map_err(|issue| {
        ApiError::bad_request(format!("invalid path parameter: {issue}"))
            .with_details(json!({"field": "entity_id", "issue": issue}))
    })
}

pub(crate) fn not_found(entity: &ContextEntity) -> impl Fn(cp_store::StoreError) -> ApiError + '_ {
    move |e| ApiError::from_store(e, entity.kind().as_str())
}

/// The context stored for an entity; empty lists (and a null `id`) when nothing is stored.
#[utoipa::path(get, path = "/api/v1/context/{entity_type}/{entity_id}", tag = "context",
    params(("entity_type" = ContextEntityType, Path),
           ("entity_id" = String, Path, description = "The organization's slug, or the entity's UUID")),
    responses((status = 200, body = Context), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_context(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, String)>,
) -> ApiResult<Json<Context>> {
    let entity = entity(&entity_type, &entity_id)?;
    let context = state.store.contexts(&auth.org_id).get(&entity).await;
    Ok(Json(context.map_err(not_found(&entity))?))
}

/// Partial update: fields left out stay as they are; a given list or `variables` replaces the
/// stored one.
#[utoipa::path(put, path = "/api/v1/context/{entity_type}/{entity_id}", tag = "context",
    params(("entity_type" = ContextEntityType, Path),
           ("entity_id" = String, Path, description = "The organization's slug, or the entity's UUID")),
    request_body = UpdateContext,
    responses((status = 200, body = Context), (status = 404, body = cp_types::ErrorEnvelope),
              (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_context(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((entity_type, entity_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateContext>,
) -> ApiResult<Json<Context>> {
    let entity = entity(&entity_type, &entity_id)?;
    req.validate()?;
    let context = state.store.contexts(&auth.org_id).update(&entity, &req).await;
    Ok(Json(context.map_err(not_found(&entity))?))
}

/// Removes what is stored for the entity; 200 with `{"id": "<type>/<id>", "deleted": true}`
/// whether or not anything was stored, 404 when the entity does not exist.
#[utoipa::path(delete, path = "/api/v1/context/{entity_type}/{entity_id}", tag = "context",
    params(("entity_type" = ContextEntityType, Path),
           ("entity_id" = String, Path, description = "The organization's slug, or the entity's UUID")),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_context(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path((entity_type, entity_id)): Path<(String, String)>,
) -> ApiResult<Json<Deleted>> {
    let entity = entity(&entity_type, &entity_id)?;
    let deleted = state.store.contexts(&auth.org_id).delete(&entity).await;
    deleted.map_err(not_found(&entity))?;
    Ok(Json(Deleted::new(entity.path())))
}

async fn resolve(state: &AppState, org: &str, entity: &ContextEntity) -> ApiResult<Json<ResolvedContext>> {
    let resolved = state.store.contexts(org).resolve(entity).await;
    Ok(Json(resolved.map_err(not_found(entity))?))
}

/// The context that applies to an entity: its layers (organization → projects → environments
/// → teams → the entity) and their merge (lists keep the first occurrence, a later layer's
/// variable wins).
#[utoipa::path(get, path = "/api/v1/context/resolve/{entity_type}/{entity_id}", tag = "context",
    params(("entity_type" = ContextEntityType, Path),
           ("entity_id" = String, Path, description = "The organization's slug, or the entity's UUID")),
    responses((status = 200, body = ResolvedContext), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolve_context(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path((entity_type, entity_id)): Path<(String, String)>,
) -> ApiResult<Json<ResolvedContext>> {
    let entity = entity(&entity_type, &entity_id)?;
    resolve(&state, &auth.org_id, &entity).await
}

/// The resolved context of an agent (same as `/context/resolve/agent/{id}`).
#[utoipa::path(get, path = "/api/v1/agents/{id}/context/resolved", tag = "context", params(("id" = Uuid, Path)),
    responses((status = 200, body = ResolvedContext), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolve_agent_context(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ResolvedContext>> {
    resolve(&state, &auth.org_id, &ContextEntity::Agent(id)).await
}

/// The resolved context of a team (same as `/context/resolve/team/{id}`).
#[utoipa::path(get, path = "/api/v1/teams/{id}/context/resolved", tag = "context", params(("id" = Uuid, Path)),
    responses((status = 200, body = ResolvedContext), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolve_team_context(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ResolvedContext>> {
    resolve(&state, &auth.org_id, &ContextEntity::Team(id)).await
}
