//! `/api/v1/knowledge`: knowledge items and their search.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use cp_types::graph::{GraphQuery, QueryResult};
use cp_types::knowledge::{
    CreateKnowledge, KnowledgeItem, KnowledgeSummary, SearchParams, SearchResults, ToolSearch, ToolSearchResults,
    UpdateKnowledge,
};
use cp_types::{Deleted, Page, PageParams};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, Enforcer, JsonBody, Pagination, Path, Query, Read, Write};
use crate::services::error::{ServiceResult, or_not_found};
use crate::services::knowledge;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_knowledge, create_knowledge))
        .routes(routes!(search_knowledge))
        .routes(routes!(get_knowledge, update_knowledge, delete_knowledge))
        .layer(DefaultBodyLimit::max(super::LARGE_BODY_LIMIT))
        .routes(routes!(execution_search))
        .routes(routes!(execution_graph_query))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct KnowledgeQuery {
    /// Only the items of this project.
    project_id: Option<Uuid>,
}

/// Newest first; each item shows the start of its content.
#[utoipa::path(get, path = "/api/v1/knowledge", tag = "knowledge", params(PageParams, KnowledgeQuery),
    responses((status = 200, body = Page<KnowledgeSummary>)))]
async fn list_knowledge(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Pagination(page): Pagination,
    Query(q): Query<KnowledgeQuery>,
) -> ServiceResult<Json<Page<KnowledgeSummary>>> {
    Ok(Json(
        state.store.knowledge(&auth.org_id).list(page, q.project_id).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/knowledge", tag = "knowledge", request_body = CreateKnowledge,
    responses((status = 201, body = KnowledgeItem), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn create_knowledge(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<CreateKnowledge>,
) -> ServiceResult<(StatusCode, Json<KnowledgeItem>)> {
    Ok((StatusCode::CREATED, Json(knowledge::create(&state, &auth, req).await?)))
}

/// The items holding all of `q`'s words, then those holding some (each carrying every tag of
/// `tags`), best first, each with the passage that matched (the words between `**`). With an
/// enabled embedding model the items nearest in meaning are blended in (`mode: hybrid`).
#[utoipa::path(get, path = "/api/v1/knowledge/search", tag = "knowledge", params(SearchParams),
    responses((status = 200, body = SearchResults), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn search_knowledge(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<SearchParams>,
) -> ServiceResult<Json<SearchResults>> {
    let search = q.validate()?;
    Ok(Json(knowledge::search(&state, &auth, search).await?))
}

#[utoipa::path(get, path = "/api/v1/knowledge/{id}", tag = "knowledge", params(("id" = Uuid, Path)),
    responses((status = 200, body = KnowledgeItem), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_knowledge(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<KnowledgeItem>> {
    Ok(Json(
        state
            .store
            .knowledge(&auth.org_id)
            .get(id)
            .await
            .map_err(or_not_found("knowledge item"))?,
    ))
}

/// Partial update (PATCH and PUT alike).
#[utoipa::path(method(patch, put), path = "/api/v1/knowledge/{id}", tag = "knowledge",
    params(("id" = Uuid, Path)), request_body = UpdateKnowledge,
    responses((status = 200, body = KnowledgeItem), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn update_knowledge(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<UpdateKnowledge>,
) -> ServiceResult<Json<KnowledgeItem>> {
    Ok(Json(knowledge::update(&state, &auth, id, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/knowledge/{id}", tag = "knowledge", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn delete_knowledge(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .knowledge(&auth.org_id)
        .delete(id)
        .await
        .map_err(or_not_found("knowledge item"))?;
    Ok(Json(Deleted::new(id)))
}

/// The knowledge skill's `search_knowledge` for a live execution (a worker key: only for a run
/// its workers hold, whose agent has a knowledge skill with `enable_search`).
#[utoipa::path(post, path = "/api/v1/executions/{id}/knowledge/search", tag = "knowledge",
    params(("id" = Uuid, Path)), request_body = ToolSearch,
    responses((status = 200, body = ToolSearchResults), (status = 403, body = cp_types::ErrorEnvelope),
        (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope)))]
async fn execution_search(
    State(state): State<AppState>,
    auth: Auth<Enforcer>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<ToolSearch>,
) -> ServiceResult<Json<ToolSearchResults>> {
    Ok(Json(knowledge::tools::search(&state, &auth, id, &req.query).await?))
}

/// The knowledge skill's `query_graph` for a live execution (as `execution_search`, with
/// `enable_graph_query`).
#[utoipa::path(post, path = "/api/v1/executions/{id}/graph/query", tag = "knowledge",
    params(("id" = Uuid, Path)), request_body = GraphQuery,
    responses((status = 200, body = QueryResult), (status = 403, body = cp_types::ErrorEnvelope),
        (status = 404, body = cp_types::ErrorEnvelope), (status = 409, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn execution_graph_query(
    State(state): State<AppState>,
    auth: Auth<Enforcer>,
    Path(id): Path<Uuid>,
    JsonBody(req): JsonBody<GraphQuery>,
) -> ServiceResult<Json<QueryResult>> {
    Ok(Json(
        knowledge::tools::query_graph(&state, &auth, id, &req.query).await?,
    ))
}
