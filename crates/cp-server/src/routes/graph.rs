//! `/api/v1/graph`: the context graph. The official client calls the same routes under
//! `/api/v1/context-graph` (the reference proxies them there), so they are served at both.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use cp_store::graph::NodeFilter;
use cp_types::Deleted;
use cp_types::graph::{
    Direction, GraphHealth, GraphListParams, GraphNode, GraphQuery, GraphStats, IngestNodes, IngestRelationships,
    IngestedNodes, IngestedRelationships, IntegrationList, LabelList, MAX_DEPTH, NodeList, NodeSearch, QueryResult,
    RelationshipList, RelationshipParams, RelationshipTypeList, Subgraph, SubgraphRequest, TextSearch, is_integration,
    is_name,
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::{Auth, JsonBody, Path, Query, Read, Write};
use crate::services::error::{ServiceError, ServiceResult, or_not_found};
use crate::services::graph;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    let graph = OpenApiRouter::new()
        .routes(routes!(list_nodes, ingest_nodes))
        .routes(routes!(get_node, delete_node))
        .routes(routes!(search_nodes))
        .routes(routes!(search_nodes_by_text))
        .routes(routes!(node_relationships))
        .routes(routes!(ingest_relationships))
        .routes(routes!(delete_relationship))
        .routes(routes!(subgraph))
        .routes(routes!(labels))
        .routes(routes!(relationship_types))
        .routes(routes!(stats))
        .routes(routes!(query))
        .routes(routes!(integrations))
        .routes(routes!(delete_integration))
        .routes(routes!(health))
        .layer(DefaultBodyLimit::max(super::LARGE_BODY_LIMIT));
    OpenApiRouter::new()
        .merge(graph.clone())
        .nest("/api/v1/context-graph", graph)
        .routes(routes!(client_health))
}

fn list_page(p: GraphListParams) -> ServiceResult<cp_types::graph::GraphPage> {
    Ok(p.validate()?)
}

/// Every node, oldest first.
#[utoipa::path(get, path = "/api/v1/graph/nodes", tag = "graph", params(GraphListParams),
    responses((status = 200, body = NodeList)))]
async fn list_nodes(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
) -> ServiceResult<Json<NodeList>> {
    let page = list_page(p)?;
    let filter = NodeFilter {
        integration: page.integration.clone(),
        ..Default::default()
    };
    let (nodes, total) = state.store.graph(&auth.org_id).nodes(&filter, &page).await?;
    Ok(Json(node_list(nodes, total, &page)))
}

fn node_list(nodes: Vec<GraphNode>, total: i64, page: &cp_types::graph::GraphPage) -> NodeList {
    NodeList {
        count: nodes.len(),
        nodes,
        total,
        skip: page.skip,
        limit: page.limit,
    }
}

/// Creates or updates up to 1000 nodes, each found by `(integration, external_id)`; labels
/// and properties are replaced.
#[utoipa::path(post, path = "/api/v1/graph/nodes", tag = "graph", request_body = IngestNodes,
    responses((status = 200, body = IngestedNodes), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn ingest_nodes(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<IngestNodes>,
) -> ServiceResult<Json<IngestedNodes>> {
    req.validate()?;
    let (nodes, created) = state.store.graph(&auth.org_id).upsert_nodes(&req.nodes).await?;
    graph::ingested(&state, created);
    Ok(Json(IngestedNodes {
        updated: nodes.len() - created,
        created,
        nodes,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IntegrationParam {
    /// The node must come from this source.
    integration: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/graph/nodes/{node_id}", tag = "graph",
    params(("node_id" = Uuid, Path), IntegrationParam),
    responses((status = 200, body = GraphNode), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn get_node(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Query(q): Query<IntegrationParam>,
) -> ServiceResult<Json<GraphNode>> {
    let node = state
        .store
        .graph(&auth.org_id)
        .get_node(id)
        .await
        .map_err(or_not_found("node"))?;
    if q.integration.is_some_and(|i| i != node.integration) {
        return Err(ServiceError::not_found("node"));
    }
    Ok(Json(node))
}

/// Deletes an ingested node with its relationships (409 for the control plane's nodes).
#[utoipa::path(delete, path = "/api/v1/graph/nodes/{node_id}", tag = "graph", params(("node_id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_node(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .graph(&auth.org_id)
        .delete_node(id)
        .await
        .map_err(or_not_found("node"))?;
    Ok(Json(Deleted::new(id)))
}

/// Nodes with the label (or every one of `labels`) whose properties equal each of
/// `property_filters`.
#[utoipa::path(post, path = "/api/v1/graph/nodes/search", tag = "graph", params(GraphListParams),
    request_body = NodeSearch, responses((status = 200, body = NodeList), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn search_nodes(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
    JsonBody(req): JsonBody<NodeSearch>,
) -> ServiceResult<Json<NodeList>> {
    let page = list_page(p)?;
    let labels = req.validate()?;
    let filter = NodeFilter {
        integration: page.integration.clone(),
        labels,
        properties: req.property_filters,
        ..Default::default()
    };
    let (nodes, total) = state.store.graph(&auth.org_id).nodes(&filter, &page).await?;
    Ok(Json(node_list(nodes, total, &page)))
}

/// Nodes with a property value (or `property`'s) holding `search_text`, ignoring case.
#[utoipa::path(post, path = "/api/v1/graph/nodes/search/text", tag = "graph", params(GraphListParams),
    request_body = TextSearch, responses((status = 200, body = NodeList), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn search_nodes_by_text(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
    JsonBody(req): JsonBody<TextSearch>,
) -> ServiceResult<Json<NodeList>> {
    let page = list_page(p)?;
    req.validate()?;
    let filter = NodeFilter {
        integration: page.integration.clone(),
        text: Some(req.search_text),
        text_property: req.property,
        ..Default::default()
    };
    let (nodes, total) = state.store.graph(&auth.org_id).nodes(&filter, &page).await?;
    Ok(Json(node_list(nodes, total, &page)))
}

/// The node's relationships, `incoming`, `outgoing` or `both`, optionally of one type.
#[utoipa::path(get, path = "/api/v1/graph/nodes/{node_id}/relationships", tag = "graph",
    params(("node_id" = Uuid, Path), RelationshipParams, GraphListParams),
    responses((status = 200, body = RelationshipList), (status = 404, body = cp_types::ErrorEnvelope)))]
async fn node_relationships(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Path(id): Path<Uuid>,
    Query(r): Query<RelationshipParams>,
    Query(p): Query<GraphListParams>,
) -> ServiceResult<Json<RelationshipList>> {
    let page = list_page(p)?;
    if let Some(t) = &r.relationship_type
        && !is_name(t)
    {
        return Err(ServiceError::invalid("relationship_type", "not a relationship type"));
    }
    let (relationships, total) = state
        .store
        .graph(&auth.org_id)
        .relationships(
            id,
            r.direction.unwrap_or(Direction::Both),
            r.relationship_type.as_deref(),
            &page,
        )
        .await
        .map_err(or_not_found("node"))?;
    Ok(Json(RelationshipList {
        node_id: id,
        count: relationships.len(),
        relationships,
        total,
        skip: page.skip,
        limit: page.limit,
    }))
}

/// Creates or updates up to 1000 relationships, each found by `(from, type, to)`; an end is a
/// node id or `{integration, external_id}`.
#[utoipa::path(post, path = "/api/v1/graph/relationships", tag = "graph", request_body = IngestRelationships,
    responses((status = 200, body = IngestedRelationships), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn ingest_relationships(
    State(state): State<AppState>,
    auth: Auth<Write>,
    JsonBody(req): JsonBody<IngestRelationships>,
) -> ServiceResult<Json<IngestedRelationships>> {
    req.validate()?;
    let (relationships, created) = state
        .store
        .graph(&auth.org_id)
        .upsert_relationships(&req.relationships)
        .await?;
    graph::ingested(&state, created);
    Ok(Json(IngestedRelationships {
        updated: relationships.len() - created,
        created,
        relationships,
    }))
}

/// Deletes an ingested relationship (409 for the control plane's).
#[utoipa::path(delete, path = "/api/v1/graph/relationships/{relationship_id}", tag = "graph",
    params(("relationship_id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_relationship(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(id): Path<Uuid>,
) -> ServiceResult<Json<Deleted>> {
    state
        .store
        .graph(&auth.org_id)
        .delete_relationship(id)
        .await
        .map_err(or_not_found("relationship"))?;
    Ok(Json(Deleted::new(id)))
}

/// The nodes within `depth` (1..3) relationships of `node_id`, either direction, and the
/// relationships between them; at most 1000 nodes.
#[utoipa::path(post, path = "/api/v1/graph/subgraph", tag = "graph", params(IntegrationParam),
    request_body = SubgraphRequest,
    responses((status = 200, body = Subgraph), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 422, body = cp_types::ErrorEnvelope)))]
async fn subgraph(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(q): Query<IntegrationParam>,
    JsonBody(req): JsonBody<SubgraphRequest>,
) -> ServiceResult<Json<Subgraph>> {
    let depth = req.depth.unwrap_or(1);
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(ServiceError::invalid(
            "depth",
            format!("must be between 1 and {MAX_DEPTH}"),
        ));
    }
    let (nodes, relationships, truncated) = state
        .store
        .graph(&auth.org_id)
        .subgraph(req.node_id, depth, q.integration.as_deref())
        .await
        .map_err(or_not_found("node"))?;
    Ok(Json(Subgraph {
        root: req.node_id,
        depth,
        nodes,
        relationships,
        truncated,
    }))
}

/// Labels with how many nodes carry each, most used first.
#[utoipa::path(get, path = "/api/v1/graph/labels", tag = "graph", params(GraphListParams),
    responses((status = 200, body = LabelList)))]
async fn labels(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
) -> ServiceResult<Json<LabelList>> {
    let page = list_page(p)?;
    let labels = state.store.graph(&auth.org_id).labels(&page).await?;
    Ok(Json(LabelList {
        count: labels.len(),
        labels,
        skip: page.skip,
        limit: page.limit,
    }))
}

/// Relationship types with how many relationships have each, most used first.
#[utoipa::path(get, path = "/api/v1/graph/relationship-types", tag = "graph", params(GraphListParams),
    responses((status = 200, body = RelationshipTypeList)))]
async fn relationship_types(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
) -> ServiceResult<Json<RelationshipTypeList>> {
    let page = list_page(p)?;
    let relationship_types = state.store.graph(&auth.org_id).relationship_types(&page).await?;
    Ok(Json(RelationshipTypeList {
        count: relationship_types.len(),
        relationship_types,
        skip: page.skip,
        limit: page.limit,
    }))
}

/// Counts of nodes, relationships, labels, types and sources.
#[utoipa::path(get, path = "/api/v1/graph/stats", tag = "graph", params(GraphListParams),
    responses((status = 200, body = GraphStats)))]
async fn stats(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
) -> ServiceResult<Json<GraphStats>> {
    let page = list_page(p)?;
    Ok(Json(
        state
            .store
            .graph(&auth.org_id)
            .stats(page.integration.as_deref())
            .await?,
    ))
}

/// Runs a read-only Cypher query (MATCH … WHERE … RETURN … ORDER BY … SKIP … LIMIT, up to
/// 3 hops, at most 1000 rows, 5 s); anything else is a 422 whose `details.clause` names what
/// was refused.
#[utoipa::path(post, path = "/api/v1/graph/query", tag = "graph", request_body = GraphQuery,
    responses((status = 200, body = QueryResult), (status = 422, body = cp_types::ErrorEnvelope)))]
async fn query(
    State(state): State<AppState>,
    auth: Auth<Read>,
    JsonBody(req): JsonBody<GraphQuery>,
) -> ServiceResult<Json<QueryResult>> {
    Ok(Json(graph::query(&state, &auth, &req.query).await?))
}

/// The sources of nodes and relationships (`control_plane` is the projection of this
/// organization's agents, teams, skills and the rest).
#[utoipa::path(get, path = "/api/v1/graph/integrations", tag = "graph", params(GraphListParams),
    responses((status = 200, body = IntegrationList)))]
async fn integrations(
    State(state): State<AppState>,
    auth: Auth<Read>,
    Query(p): Query<GraphListParams>,
) -> ServiceResult<Json<IntegrationList>> {
    let page = list_page(p)?;
    let integrations = state.store.graph(&auth.org_id).integrations(&page).await?;
    Ok(Json(IntegrationList {
        count: integrations.len(),
        integrations,
        skip: page.skip,
        limit: page.limit,
    }))
}

/// Deletes every node and relationship one source wrote.
#[utoipa::path(delete, path = "/api/v1/graph/integrations/{name}", tag = "graph", params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = cp_types::ErrorEnvelope),
        (status = 409, body = cp_types::ErrorEnvelope)))]
async fn delete_integration(
    State(state): State<AppState>,
    auth: Auth<Write>,
    Path(name): Path<String>,
) -> ServiceResult<Json<Value>> {
    if !is_integration(&name) {
        return Err(ServiceError::not_found("integration"));
    }
    let (nodes, relationships) = state
        .store
        .graph(&auth.org_id)
        .delete_integration(&name)
        .await
        .map_err(or_not_found("integration"))?;
    Ok(Json(
        json!({"integration": name, "deleted": true, "nodes": nodes, "relationships": relationships}),
    ))
}

#[utoipa::path(get, path = "/api/v1/graph/health", tag = "graph", responses((status = 200, body = GraphHealth)))]
async fn health(State(state): State<AppState>, _auth: Auth<Read>) -> ServiceResult<Json<GraphHealth>> {
    Ok(Json(graph::health(&state).await?))
}

/// Where the official client asks for the graph's health.
#[utoipa::path(get, path = "/api/v1/context-graph/health", tag = "graph", responses((status = 200, body = GraphHealth)))]
async fn client_health(State(state): State<AppState>, _auth: Auth<Read>) -> ServiceResult<Json<GraphHealth>> {
    Ok(Json(graph::health(&state).await?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_prefixes_serve_the_graph() {
        let api = super::routes().split_for_parts().1;
        for path in [
            "/api/v1/graph/nodes",
            "/api/v1/context-graph/api/v1/graph/nodes",
            "/api/v1/context-graph/health",
        ] {
            assert!(api.paths.paths.contains_key(path), "{path}");
        }
    }
}
