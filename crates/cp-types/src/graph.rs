//! The context graph (issue 25): nodes and relationships of one organization, projected from
//! the control plane's own entities or ingested from the user's inventory.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

/// The integration of nodes and relationships the control plane projects from its entities;
/// no one else may write it.
pub const CONTROL_PLANE: &str = "control_plane";
/// The relationship types the control plane projects between its own nodes; between two of
/// them only the projection writes these.
pub const PROJECTED_TYPES: &[&str] = &[
    "USES_SKILL",
    "MEMBER_OF",
    "RUNS_IN",
    "USES_MODEL",
    "BELONGS_TO",
    "USES_AGENT",
    "USES_TEAM",
];
/// Nodes or relationships per ingestion request at most.
pub const MAX_BATCH: usize = 1000;
/// Serialized size of one node's or relationship's properties at most.
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;
/// Depth of a subgraph at most.
pub const MAX_DEPTH: i64 = 3;
/// Nodes a subgraph returns at most.
pub const MAX_SUBGRAPH_NODES: usize = 1000;
/// Relationships a subgraph returns at most.
pub const MAX_SUBGRAPH_RELATIONSHIPS: usize = 5000;
/// Rows of a list at most (the client's `limit`).
pub const MAX_LIST_LIMIT: i64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GraphNode {
    pub id: Uuid,
    pub labels: Vec<String>,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub integration: String,
    pub external_id: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GraphRelationship {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub rel_type: String,
    /// The id of the node it starts from.
    pub from: Uuid,
    pub to: Uuid,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub integration: String,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// Labels and relationship types are identifiers, as Cypher writes them unquoted.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Property keys a search may name: 1 to 200 bytes, no `"`, `\\` or control characters
/// (they become JSON paths).
pub fn is_property_key(k: &str) -> bool {
    (1..=200).contains(&k.len()) && !k.chars().any(|c| c == '"' || c == '\\' || c.is_control())
}

/// Integrations name a source: letters, digits, `-`, `_`, `.`, 1 to 100 characters.
pub fn is_integration(s: &str) -> bool {
    (1..=100).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// One node to create or update, found by `(integration, external_id)`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NodeInput {
    #[schema(min_length = 1, max_length = 500)]
    pub external_id: String,
    #[schema(min_items = 1, max_items = 20)]
    pub labels: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub integration: String,
}

/// `POST /api/v1/graph/nodes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct IngestNodes {
    #[schema(max_items = 1000)]
    pub nodes: Vec<NodeInput>,
}

/// A relationship's end: a node id, or the node's `(integration, external_id)`.
#[derive(Debug, Clone, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(untagged)]
pub enum NodeRef {
    Id(Uuid),
    External { integration: String, external_id: String },
}

/// One relationship to create or update, found by `(from, type, to)`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RelationshipInput {
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub rel_type: String,
    pub from: NodeRef,
    pub to: NodeRef,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    /// Defaults to the integration of `from` (or of `to` when `from` is the control plane's).
    pub integration: Option<String>,
}

/// `POST /api/v1/graph/relationships`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct IngestRelationships {
    #[schema(max_items = 1000)]
    pub relationships: Vec<RelationshipInput>,
}

fn check_properties(v: &mut Issues, field: &str, props: &Map<String, Value>) {
    let size = serde_json::to_vec(props).map(|b| b.len()).unwrap_or(usize::MAX);
    v.check(
        size <= MAX_PROPERTIES_BYTES,
        field,
        format!("must serialize to at most {MAX_PROPERTIES_BYTES} bytes"),
    );
    v.check(
        props.keys().all(|k| (1..=200).contains(&k.len())),
        field,
        "keys have 1 to 200 characters",
    );
}

fn check_integration(v: &mut Issues, field: &str, integration: &str) {
    if integration == CONTROL_PLANE {
        v.push(field, "'control_plane' is written only by the control plane itself");
    } else {
        v.check(
            is_integration(integration),
            field,
            "1 to 100 letters, digits, '-', '_' or '.'",
        );
    }
}

fn check_batch(v: &mut Issues, field: &str, n: usize) {
    v.check(n >= 1, field, "must hold at least one item");
    v.check(n <= MAX_BATCH, field, format!("at most {MAX_BATCH} per request"));
}

impl IngestNodes {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_batch(&mut v, "nodes", self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            v.check(
                (1..=500).contains(&n.external_id.len()),
                &format!("nodes[{i}].external_id"),
                "must have 1 to 500 bytes",
            );
            v.check(
                (1..=20).contains(&n.labels.len()) && n.labels.iter().all(|l| is_name(l)),
                &format!("nodes[{i}].labels"),
                "1 to 20 labels, each a letter or '_' then letters, digits or '_' (at most 64)",
            );
            check_integration(&mut v, &format!("nodes[{i}].integration"), &n.integration);
            check_properties(&mut v, &format!("nodes[{i}].properties"), &n.properties);
        }
        v.finish()
    }
}

impl IngestRelationships {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_batch(&mut v, "relationships", self.relationships.len());
        for (i, r) in self.relationships.iter().enumerate() {
            v.check(
                is_name(&r.rel_type),
                &format!("relationships[{i}].type"),
                "a letter or '_' then letters, digits or '_' (at most 64)",
            );
            for (end, node) in [("from", &r.from), ("to", &r.to)] {
                if let NodeRef::External {
                    integration,
                    external_id,
                } = node
                {
                    v.check(
                        is_integration(integration),
                        &format!("relationships[{i}].{end}.integration"),
                        "1 to 100 letters, digits, '-', '_' or '.'",
                    );
                    v.check(
                        (1..=500).contains(&external_id.len()),
                        &format!("relationships[{i}].{end}.external_id"),
                        "must have 1 to 500 bytes",
                    );
                }
            }
            if let Some(integration) = &r.integration {
                check_integration(&mut v, &format!("relationships[{i}].integration"), integration);
            }
            check_properties(&mut v, &format!("relationships[{i}].properties"), &r.properties);
        }
        v.finish()
    }
}

/// What an ingestion did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestedNodes {
    pub nodes: Vec<GraphNode>,
    pub created: usize,
    pub updated: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestedRelationships {
    pub relationships: Vec<GraphRelationship>,
    pub created: usize,
    pub updated: usize,
}

/// Query parameters of the graph's lists (the client sends `skip`, `limit`, `integration`).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GraphListParams {
    /// Only what this source wrote.
    pub integration: Option<String>,
    #[param(minimum = 0)]
    pub skip: Option<i64>,
    /// 1..1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A validated graph list request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphPage {
    pub integration: Option<String>,
    pub skip: i64,
    pub limit: i64,
}

impl GraphPage {
    /// As the one pagination shape (`skip` is its `offset`).
    pub fn request(&self) -> crate::page::PageRequest {
        crate::page::PageRequest {
            limit: self.limit,
            offset: self.skip,
        }
    }
}

impl GraphListParams {
    pub fn validate(self) -> Result<GraphPage, Vec<FieldIssue>> {
        let mut v = Issues::new();
        let skip = self.skip.unwrap_or(0);
        let limit = self.limit.unwrap_or(100);
        v.check(skip >= 0, "skip", "must be zero or more");
        v.check(
            (1..=MAX_LIST_LIMIT).contains(&limit),
            "limit",
            format!("must be between 1 and {MAX_LIST_LIMIT}"),
        );
        if let Some(i) = &self.integration {
            v.check(
                is_integration(i),
                "integration",
                "1 to 100 letters, digits, '-', '_' or '.'",
            );
        }
        v.finish()?;
        Ok(GraphPage {
            integration: self.integration,
            skip,
            limit,
        })
    }
}

/// A page of nodes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<GraphNode>,
    /// Nodes on this page.
    pub count: usize,
    /// Nodes matching, on every page.
    pub total: i64,
    pub skip: i64,
    pub limit: i64,
}

/// `POST .../nodes/search`: nodes with the label (or all of `labels`) whose properties equal
/// every one of `property_filters`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct NodeSearch {
    pub label: Option<String>,
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub property_filters: Map<String, Value>,
}

impl NodeSearch {
    /// The labels to require, checked.
    pub fn validate(&self) -> Result<Vec<String>, Vec<FieldIssue>> {
        let mut v = Issues::new();
        let mut labels: Vec<String> = self.label.iter().cloned().collect();
        labels.extend(self.labels.iter().flatten().cloned());
        labels.dedup();
        v.check(labels.len() <= 20, "labels", "at most 20 labels");
        v.check(
            labels.iter().all(|l| is_name(l)),
            "labels",
            "each a letter or '_' then letters, digits or '_' (at most 64)",
        );
        v.check(
            self.property_filters.len() <= 20,
            "property_filters",
            "at most 20 filters",
        );
        v.check(
            self.property_filters.keys().all(|k| is_property_key(k)),
            "property_filters",
            "keys have 1 to 200 bytes, without '\"', '\\' or control characters",
        );
        v.finish()?;
        Ok(labels)
    }
}

/// `POST .../nodes/search/text`: nodes with a property value (or `property`'s value) holding
/// `search_text`, ignoring case.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TextSearch {
    #[schema(min_length = 1, max_length = 500)]
    pub search_text: String,
    pub property: Option<String>,
}

impl TextSearch {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("search_text", &self.search_text, 1, 500);
        if let Some(p) = &self.property {
            v.check(
                is_property_key(p),
                "property",
                "1 to 200 bytes, without '\"', '\\' or control characters",
            );
        }
        v.finish()
    }
}

wire_enum! {
    Direction { Incoming = "incoming", Outgoing = "outgoing", Both = "both" }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RelationshipParams {
    /// `incoming`, `outgoing` or `both` (default).
    pub direction: Option<Direction>,
    pub relationship_type: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RelationshipList {
    pub node_id: Uuid,
    pub relationships: Vec<GraphRelationship>,
    pub count: usize,
    pub total: i64,
    pub skip: i64,
    pub limit: i64,
}

/// `POST .../subgraph`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SubgraphRequest {
    pub node_id: Uuid,
    /// 1..3 (default 1).
    #[schema(minimum = 1, maximum = 3)]
    pub depth: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Subgraph {
    pub root: Uuid,
    pub depth: i64,
    pub nodes: Vec<GraphNode>,
    pub relationships: Vec<GraphRelationship>,
    /// Whether nodes past the first 1000 or relationships past the first 5000 were left out.
    pub truncated: bool,
}

/// A label or relationship type with how many carry it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct NameCount {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LabelList {
    pub labels: Vec<NameCount>,
    pub count: usize,
    pub skip: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RelationshipTypeList {
    pub relationship_types: Vec<NameCount>,
    pub count: usize,
    pub skip: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphStats {
    pub node_count: i64,
    pub relationship_count: i64,
    pub labels: BTreeMap<String, i64>,
    pub relationship_types: BTreeMap<String, i64>,
    pub integrations: BTreeMap<String, i64>,
}

/// A source of nodes and relationships.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GraphIntegration {
    pub name: String,
    pub node_count: i64,
    pub relationship_count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntegrationList {
    pub integrations: Vec<GraphIntegration>,
    pub count: usize,
    pub skip: i64,
    pub limit: i64,
}

/// `POST .../query`: a read-only Cypher query.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct GraphQuery {
    #[schema(min_length = 1, max_length = 16384)]
    pub query: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// One object per row, keyed by column.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<Map<String, Value>>,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GraphHealth {
    pub status: String,
    pub service: String,
    pub backend: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_refs_read_as_ids_or_sources() {
        let id: NodeRef = serde_json::from_str("\"0190a5b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b\"").unwrap();
        assert!(matches!(id, NodeRef::Id(_)));
        let ext: NodeRef = serde_json::from_str(r#"{"integration":"github","external_id":"repo/1"}"#).unwrap();
        assert!(matches!(ext, NodeRef::External { .. }));
        assert!(serde_json::from_str::<NodeRef>("\"not-a-uuid\"").is_err());
    }

    #[test]
    fn nobody_writes_the_control_plane_integration() {
        let batch = IngestNodes {
            nodes: vec![NodeInput {
                external_id: "x".into(),
                labels: vec!["Agent".into()],
                properties: Map::new(),
                integration: CONTROL_PLANE.into(),
            }],
        };
        assert_eq!(batch.validate().unwrap_err()[0].field, "nodes[0].integration");
    }
}
