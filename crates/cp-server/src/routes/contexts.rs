//! `/api/v1/context/{entity_type}/{entity_id}`, its resolution, and the agent and team shortcuts.

use axum::Json;
use axum::extract::State;
use cp_types::Deleted;
use cp_types::context::{Context, ContextEntity, ContextEntityType, ResolvedContext, UpdateContext};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::extract::context_entity;
use crate::http::{Auth, JsonBody, Path, Read, Write};
use crate::services::error::{ServiceResult, or_not_found};
use crate::services::knowledge;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_context, update_context, delete_context))
        .routes(routes!(resolve_context))
        .routes(routes!(resolve_agent_context))
        .routes(routes!(resolve_team_context))
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
) -> ServiceResult<Json<Context>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    let context = state.store.contexts(&auth.org_id).get(&entity).await;
    Ok(Json(context.map_err(or_not_found(entity.kind().as_str()))?))
}

/// Partial update: fields left out stay as they are; a given list or `variables` replaces the
/// stored one. `knowledge_uuids` name knowledge items and `resource_ids` graph nodes of the
/// organization (422 for anything else); runs of the entity get them in their instructions.
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
) -> ServiceResult<Json<Context>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    req.validate()?;
    knowledge::check_context_refs(&state, &auth.org_id, &req).await?;
    let context = state.store.contexts(&auth.org_id).update(&entity, &req).await;
    Ok(Json(context.map_err(or_not_found(entity.kind().as_str()))?))
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
) -> ServiceResult<Json<Deleted>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    let deleted = state.store.contexts(&auth.org_id).delete(&entity).await;
    deleted.map_err(or_not_found(entity.kind().as_str()))?;
    Ok(Json(Deleted::new(entity.path())))
}

async fn resolve(state: &AppState, org: &str, entity: &ContextEntity) -> ServiceResult<Json<ResolvedContext>> {
    let resolved = state.store.contexts(org).resolve(entity).await;
    Ok(Json(resolved.map_err(or_not_found(entity.kind().as_str()))?))
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
) -> ServiceResult<Json<ResolvedContext>> {
    let entity = context_entity(&entity_type, &entity_id)?;
    resolve(&state, &auth.org_id, &entity).await
}

/// The resolved context of an agent (same as `/context/resolve/agent/{id}`).
#[utoipa::path(get, path = "/api/v1/agents/{id}/context/resolved", tag = "context", params(("id" = Uuid, Path)),
    responses((status = 200, body = ResolvedContext), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolve_agent_context(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<ResolvedContext>> {
    resolve(&state, &auth.org_id, &ContextEntity::Agent(id)).await
}

/// The resolved context of a team (same as `/context/resolve/team/{id}`).
#[utoipa::path(get, path = "/api/v1/teams/{id}/context/resolved", tag = "context", params(("id" = Uuid, Path)),
    responses((status = 200, body = ResolvedContext), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn resolve_team_context(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<ResolvedContext>> {
    resolve(&state, &auth.org_id, &ContextEntity::Team(id)).await
}
