//! The context graph: nodes and relationships of one organization. The control plane's own
//! entities are projected into it by triggers (migration 0025), so no write path can forget
//! them; users ingest their inventory through [`Graph::upsert_nodes`] and
//! [`Graph::upsert_relationships`].

mod query;

use std::collections::{BTreeMap, HashMap, HashSet};

use cp_types::graph::{
    CONTROL_PLANE, Direction, GraphIntegration, GraphNode, GraphPage, GraphRelationship, GraphStats,
    MAX_SUBGRAPH_NODES, MAX_SUBGRAPH_RELATIONSHIPS, NameCount, NodeInput, NodeRef, PROJECTED_TYPES, RelationshipInput,
};
use cp_types::{Timestamp, now};
use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult};
use crate::page::page_of;

pub use query::QueryRows;

const NODE_COLUMNS: &str = "n.id, n.labels, n.properties, n.integration, n.external_id, n.created_at, n.updated_at";
const REL_COLUMNS: &str = "r.id, r.type, r.from_id, r.to_id, r.properties, r.integration, r.created_at, r.updated_at";

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: Uuid,
    labels: Json<Vec<String>>,
    properties: Json<Map<String, Value>>,
    integration: String,
    external_id: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<NodeRow> for GraphNode {
    fn from(r: NodeRow) -> Self {
        GraphNode {
            id: r.id,
            labels: r.labels.0,
            properties: r.properties.0,
            integration: r.integration,
            external_id: r.external_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RelRow {
    id: Uuid,
    #[sqlx(rename = "type")]
    rel_type: String,
    from_id: Uuid,
    to_id: Uuid,
    properties: Json<Map<String, Value>>,
    integration: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<RelRow> for GraphRelationship {
    fn from(r: RelRow) -> Self {
        GraphRelationship {
            id: r.id,
            rel_type: r.rel_type,
            from: r.from_id,
            to: r.to_id,
            properties: r.properties.0,
            integration: r.integration,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Which nodes a list or search returns.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub integration: Option<String>,
    /// Every one of these labels.
    pub labels: Vec<String>,
    /// Each property equal to its value.
    pub properties: Map<String, Value>,
    /// A property value (or `text_property`'s) holding this text, ignoring case.
    pub text: Option<String>,
    pub text_property: Option<String>,
}

/// Ids as a JSON array of hex strings, which both backends turn back into ids in SQL
/// (`ids_in(n)`): one statement text for any number of ids.
fn id_list(ids: &[Uuid]) -> Json<Vec<String>> {
    Json(ids.iter().map(|id| id.simple().to_string()).collect())
}

/// The ids bound as `$n` by [`id_list`], as a subquery.
fn ids_in(pg: bool, n: usize) -> String {
    if pg {
        format!("(SELECT value::uuid FROM jsonb_array_elements_text(${n}::jsonb))")
    } else {
        format!("(SELECT unhex(value) FROM json_each(${n}))")
    }
}

/// `properties.name` when it is a string short enough for the indexed column (as
/// `cp_cypher::MAX_INDEXED_NAME` expects).
fn name_of(props: &Map<String, Value>) -> Option<&str> {
    props
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| n.len() <= cp_cypher::MAX_INDEXED_NAME)
}

/// How a property key is bound for `->`/`->>`: a quoted JSON path on SQLite (keys are
/// checked free of `"` and `\`, `is_property_key`), the bare key on PostgreSQL.
fn key_param(pg: bool, key: &str) -> Param {
    Param::Text(if pg { key.to_string() } else { format!("$.\"{key}\"") })
}

/// The parameters of a node filter, in the order [`node_where`] numbers them from `$2`.
enum Param {
    Text(String),
    Json(Value),
}

/// The `WHERE` of a node list (alias `n`; `$1` is the organization).
fn node_where(pg: bool, f: &NodeFilter, params: &mut Vec<Param>) -> String {
    let mut sql = String::from("n.organization_id = $1");
    let next = |params: &mut Vec<Param>, p: Param| {
        params.push(p);
        params.len() + 1
    };
    if let Some(i) = &f.integration {
        let n = next(params, Param::Text(i.clone()));
        sql += &format!(" AND n.integration = ${n}");
    }
    if let Some(first) = f.labels.first() {
        // The first label drives the lookup through the label index; the rest are checked.
        let n = next(params, Param::Text(first.clone()));
        sql += &format!(
            " AND n.id IN (SELECT node_id FROM graph_node_labels WHERE organization_id = $1 AND label = ${n})"
        );
        for label in &f.labels[1..] {
            let n = next(params, Param::Text(label.clone()));
            sql +=
                &format!(" AND EXISTS (SELECT 1 FROM graph_node_labels l WHERE l.node_id = n.id AND l.label = ${n})");
        }
    }
    for (key, value) in &f.properties {
        if key == "name"
            && let Some(name) = value.as_str()
            && name.len() <= cp_cypher::MAX_INDEXED_NAME
        {
            let n = next(params, Param::Text(name.to_string()));
            sql += &format!(" AND n.name = ${n}");
            continue;
        }
        let k = next(params, key_param(pg, key));
        let v = next(params, Param::Json(value.clone()));
        sql += &if pg {
            format!(" AND n.properties -> ${k}::text = ${v}::jsonb")
        } else {
            // A JSON null matches a null property, not a missing one (as on PostgreSQL).
            format!(
                " AND json_type(n.properties, ${k}) IS NOT NULL AND (n.properties ->> ${k}) IS json_extract(${v}, '$')"
            )
        };
    }
    if let Some(text) = &f.text {
        // SQLite's lower() folds ASCII only; PostgreSQL's folds every letter.
        let needle = if pg {
            text.to_lowercase()
        } else {
            text.to_ascii_lowercase()
        };
        let t = next(params, Param::Text(needle));
        sql += &match (&f.text_property, pg) {
            (Some(p), true) => {
                let k = next(params, key_param(true, p));
                format!(" AND strpos(lower(n.properties ->> ${k}::text), ${t}) > 0")
            }
            (Some(p), false) => {
                let k = next(params, key_param(false, p));
                format!(" AND instr(lower(n.properties ->> ${k}), ${t}) > 0")
            }
            (None, true) => format!(
                " AND EXISTS (SELECT 1 FROM jsonb_each_text(n.properties) e WHERE strpos(lower(e.value), ${t}) > 0)"
            ),
            (None, false) => {
                format!(" AND EXISTS (SELECT 1 FROM json_each(n.properties) e WHERE instr(lower(e.value), ${t}) > 0)")
            }
        };
    }
    sql
}

/// Binds `params` (after `$1`) to a query built by `sqlx::query_as` or `query_scalar`.
macro_rules! bind_params {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                Param::Text(t) => q.bind(t.clone()),
                Param::Json(v) => q.bind(Json(v.clone())),
            };
        }
        q
    }};
}

impl Store {
    /// The context graph of one organization.
    pub fn graph<'a>(&'a self, org: &'a str) -> Graph<'a> {
        Graph { db: &self.db, org }
    }

    /// Refreshes PostgreSQL's statistics of the graph tables (SQLite's plans do not need them:
    /// the Cypher compiler marks the columns that must not drive a join).
    pub async fn analyze_graph(&self) -> StoreResult<()> {
        if let Db::Postgres(pool, _) = &self.db {
            sqlx::query("ANALYZE graph_nodes, graph_node_labels, graph_relationships")
                .execute(pool)
                .await?;
        }
        Ok(())
    }
}

pub struct Graph<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Graph<'_> {
    fn pg(&self) -> bool {
        matches!(self.db, Db::Postgres(..))
    }

    /// Creates or updates each node by `(integration, external_id)`, replacing its labels and
    /// properties. Answers the nodes in input order and how many were new.
    pub async fn upsert_nodes(&self, nodes: &[NodeInput]) -> StoreResult<(Vec<GraphNode>, usize)> {
        let at = now();
        let mut out = Vec::with_capacity(nodes.len());
        let (mut created, mut fresh) = (0, HashSet::new());
        write_tx!(self.db, tx, _pg => {
            for n in nodes {
                let row: NodeRow = sqlx::query_as(
                    "INSERT INTO graph_nodes AS n (id, organization_id, integration, external_id, labels, properties, name, \
                       created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                     ON CONFLICT (organization_id, integration, external_id) DO UPDATE \
                       SET labels = excluded.labels, properties = excluded.properties, name = excluded.name, \
                           updated_at = excluded.updated_at \
                     RETURNING id, labels, properties, integration, external_id, created_at, updated_at")
                    .bind(Uuid::now_v7()).bind(self.org).bind(&n.integration).bind(&n.external_id)
                    .bind(Json(&n.labels)).bind(Json(&n.properties)).bind(name_of(&n.properties)).bind(at)
                    .fetch_one(&mut *tx).await?;
                sqlx::query("DELETE FROM graph_node_labels WHERE node_id = $1").bind(row.id).execute(&mut *tx).await?;
                let mut seen = HashSet::new();
                for label in n.labels.iter().filter(|l| seen.insert(l.as_str())) {
                    sqlx::query("INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES ($1, $2, $3)")
                        .bind(row.id).bind(self.org).bind(label).execute(&mut *tx).await?;
                }
                if row.created_at == at && fresh.insert(row.id) {
                    created += 1;
                }
                out.push(GraphNode::from(row));
            }
        });
        Ok((out, created))
    }

    /// Creates or updates each relationship by `(from, type, to)`. An end that names no node
    /// of the organization, or a relationship the control plane projected, is a
    /// [`StoreError::Reference`] naming the input.
    pub async fn upsert_relationships(
        &self,
        rels: &[RelationshipInput],
    ) -> StoreResult<(Vec<GraphRelationship>, usize)> {
        let at = now();
        let mut out = Vec::with_capacity(rels.len());
        let (mut created, mut fresh) = (0, HashSet::new());
        write_tx!(self.db, tx, _pg => {
            let mut ends: HashMap<NodeRef, (Uuid, String)> = HashMap::new();
            for (i, r) in rels.iter().enumerate() {
                let mut resolved = Vec::with_capacity(2);
                for (end, node) in [("from", &r.from), ("to", &r.to)] {
                    if let Some(found) = ends.get(node) {
                        resolved.push(found.clone());
                        continue;
                    }
                    let found: Option<(Uuid, String)> = match node {
                        NodeRef::Id(id) => sqlx::query_as(
                            "SELECT id, integration FROM graph_nodes WHERE organization_id = $1 AND id = $2")
                            .bind(self.org).bind(id).fetch_optional(&mut *tx).await?,
                        NodeRef::External { integration, external_id } => sqlx::query_as(
                            "SELECT id, integration FROM graph_nodes \
                             WHERE organization_id = $1 AND integration = $2 AND external_id = $3")
                            .bind(self.org).bind(integration).bind(external_id).fetch_optional(&mut *tx).await?,
                    };
                    let found = found.ok_or_else(|| {
                        StoreError::reference(format!("relationships[{i}].{end}"), "no such node in this organization")
                    })?;
                    ends.insert(node.clone(), found.clone());
                    resolved.push(found);
                }
                let (from, to) = (&resolved[0], &resolved[1]);
                if from.1 == CONTROL_PLANE && to.1 == CONTROL_PLANE && PROJECTED_TYPES.contains(&r.rel_type.as_str()) {
                    return Err(StoreError::reference(
                        format!("relationships[{i}].type"),
                        "the control plane projects this type between its own nodes; change the entities instead",
                    ));
                }
                let integration = match &r.integration {
                    Some(i) => i.clone(),
                    None if from.1 != CONTROL_PLANE => from.1.clone(),
                    None if to.1 != CONTROL_PLANE => to.1.clone(),
                    None => return Err(StoreError::reference(
                        format!("relationships[{i}].integration"),
                        "both ends are the control plane's: name the integration this relationship comes from",
                    )),
                };
                let row: Option<RelRow> = sqlx::query_as(
                    "INSERT INTO graph_relationships AS r (id, organization_id, type, from_id, to_id, integration, properties, \
                       created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                     ON CONFLICT (from_id, type, to_id) DO UPDATE \
                       SET properties = excluded.properties, integration = excluded.integration, \
                           updated_at = excluded.updated_at \
                       WHERE r.integration <> 'control_plane' \
                     RETURNING id, type, from_id, to_id, properties, integration, created_at, updated_at")
                    .bind(Uuid::now_v7()).bind(self.org).bind(&r.rel_type).bind(from.0).bind(to.0).bind(&integration)
                    .bind(Json(&r.properties)).bind(at).fetch_optional(&mut *tx).await?;
                let row = row.ok_or_else(|| StoreError::reference(
                    format!("relationships[{i}]"),
                    "the control plane projects this relationship; change the entities instead",
                ))?;
                if row.created_at == at && fresh.insert(row.id) {
                    created += 1;
                }
                out.push(GraphRelationship::from(row));
            }
        });
        Ok((out, created))
    }

    pub async fn get_node(&self, id: Uuid) -> StoreResult<GraphNode> {
        let row: NodeRow = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {NODE_COLUMNS} FROM graph_nodes n WHERE n.organization_id = $1 AND n.id = $2")))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        Ok(row.into())
    }

    /// The nodes among `ids` (unknown ones left out), in no particular order.
    pub async fn nodes_by_id(&self, ids: &[Uuid]) -> StoreResult<Vec<GraphNode>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {NODE_COLUMNS} FROM graph_nodes n WHERE n.organization_id = $1 AND n.id IN {}",
                ids_in(self.pg(), 2)
            );
            let rows: Vec<NodeRow> = with_db!(self.db, pool =>
                sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(id_list(chunk)).fetch_all(pool).await)?;
            out.extend(rows.into_iter().map(GraphNode::from));
        }
        Ok(out)
    }

    /// Which of `ids` are nodes of the organization.
    pub async fn existing(&self, ids: &[Uuid]) -> StoreResult<Vec<Uuid>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT n.id FROM graph_nodes n WHERE n.organization_id = $1 AND n.id IN {}",
                ids_in(self.pg(), 2)
            );
            let found: Vec<Uuid> = with_db!(self.db, pool =>
                sqlx::query_scalar(AssertSqlSafe(sql)).bind(self.org).bind(id_list(chunk)).fetch_all(pool).await)?;
            out.extend(found);
        }
        Ok(out)
    }

    /// Every relationship touching one of `nodes`, at most `max`, with the nodes at their
    /// other ends (for summaries).
    pub async fn neighbourhood(
        &self,
        nodes: &[Uuid],
        max: i64,
    ) -> StoreResult<(Vec<GraphRelationship>, Vec<GraphNode>)> {
        let set = ids_in(self.pg(), 2);
        let sql = format!(
            "SELECT {REL_COLUMNS} FROM graph_relationships r WHERE r.organization_id = $1 \
             AND (r.from_id IN {set} OR r.to_id IN {set}) ORDER BY r.id LIMIT $3"
        );
        let rows: Vec<RelRow> = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(id_list(nodes)).bind(max).fetch_all(pool).await)?;
        let rels: Vec<GraphRelationship> = rows.into_iter().map(GraphRelationship::from).collect();
        let mut others: Vec<Uuid> = rels
            .iter()
            .flat_map(|r| [r.from, r.to])
            .filter(|id| !nodes.contains(id))
            .collect();
        others.sort();
        others.dedup();
        Ok((rels, self.nodes_by_id(&others).await?))
    }

    /// Nodes matching `filter`, oldest first, and how many match in all.
    pub async fn nodes(&self, filter: &NodeFilter, page: &GraphPage) -> StoreResult<(Vec<GraphNode>, i64)> {
        let mut params = Vec::new();
        let cond = node_where(self.pg(), filter, &mut params);
        let n = params.len();
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM graph_nodes n WHERE {cond} ORDER BY n.id LIMIT ${} OFFSET ${}",
            n + 2,
            n + 3
        );
        let rows: Vec<NodeRow> = with_db!(self.db, pool => {
            let q = bind_params!(sqlx::query_as(AssertSqlSafe(sql.clone())).bind(self.org), &params);
            q.bind(page.limit).bind(page.skip).fetch_all(pool).await
        })?;
        let count = async {
            let sql = format!("SELECT COUNT(*) FROM graph_nodes n WHERE {cond}");
            Ok(with_db!(self.db, pool => {
                let q = bind_params!(sqlx::query_scalar(AssertSqlSafe(sql.clone())).bind(self.org), &params);
                q.fetch_one(pool).await
            })?)
        };
        let found = page_of(rows, page.request(), count, |r| Ok(GraphNode::from(r))).await?;
        Ok((found.items, found.total))
    }

    /// The relationships of `node` (which must be the organization's) in `direction`,
    /// optionally of one type, oldest first, and how many there are in all.
    pub async fn relationships(
        &self,
        node: Uuid,
        direction: Direction,
        rel_type: Option<&str>,
        page: &GraphPage,
    ) -> StoreResult<(Vec<GraphRelationship>, i64)> {
        self.get_node(node).await?;
        let ends = match direction {
            Direction::Outgoing => "r.from_id = $2",
            Direction::Incoming => "r.to_id = $2",
            Direction::Both => "(r.from_id = $2 OR r.to_id = $2)",
        };
        let cond = format!(
            "r.organization_id = $1 AND {ends} AND ($3 IS NULL OR r.type = $3) AND ($4 IS NULL OR r.integration = $4)"
        );
        let cond = if self.pg() {
            cond.replace("$3 IS NULL", "$3::text IS NULL")
                .replace("$4 IS NULL", "$4::text IS NULL")
        } else {
            cond
        };
        let sql =
            format!("SELECT {REL_COLUMNS} FROM graph_relationships r WHERE {cond} ORDER BY r.id LIMIT $5 OFFSET $6");
        let rows: Vec<RelRow> = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(node).bind(rel_type).bind(&page.integration)
                .bind(page.limit).bind(page.skip).fetch_all(pool).await)?;
        let count = async {
            let sql = format!("SELECT COUNT(*) FROM graph_relationships r WHERE {cond}");
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(AssertSqlSafe(sql)).bind(self.org).bind(node).bind(rel_type)
                    .bind(&page.integration).fetch_one(pool).await)?)
        };
        let found = page_of(rows, page.request(), count, |r| Ok(GraphRelationship::from(r))).await?;
        Ok((found.items, found.total))
    }

    /// The ends of up to `max` relationships touching one of `ids` (of `integration` when given).
    async fn neighbours(&self, ids: &[Uuid], integration: Option<&str>, max: i64) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let set = ids_in(self.pg(), 2);
        let null = if self.pg() { "$3::text IS NULL" } else { "$3 IS NULL" };
        let sql = format!(
            "SELECT r.from_id, r.to_id FROM graph_relationships r WHERE r.organization_id = $1 \
             AND (r.from_id IN {set} OR r.to_id IN {set}) AND ({null} OR r.integration = $3) LIMIT $4"
        );
        Ok(with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(id_list(ids)).bind(integration).bind(max)
                .fetch_all(pool).await)?)
    }

    /// The nodes within `depth` relationships of `root` (either direction) and the
    /// relationships between them: at most [`MAX_SUBGRAPH_NODES`] nodes and
    /// [`MAX_SUBGRAPH_RELATIONSHIPS`] relationships (else `true`, truncated).
    pub async fn subgraph(
        &self,
        root: Uuid,
        depth: i64,
        integration: Option<&str>,
    ) -> StoreResult<(Vec<GraphNode>, Vec<GraphRelationship>, bool)> {
        self.get_node(root).await?;
        let mut seen: Vec<Uuid> = vec![root];
        let mut known: HashSet<Uuid> = HashSet::from([root]);
        let mut frontier = vec![root];
        let mut truncated = false;
        // Each level reads at most this many relationships: a hub's millions are not loaded.
        let per_level = (MAX_SUBGRAPH_RELATIONSHIPS + 1) as i64;
        for _ in 0..depth {
            if frontier.is_empty() || truncated {
                break;
            }
            let edges = self.neighbours(&frontier, integration, per_level).await?;
            truncated |= edges.len() as i64 == per_level;
            let mut next = Vec::new();
            for end in edges.into_iter().flat_map(|(a, b)| [a, b]) {
                if known.contains(&end) {
                    continue;
                }
                if seen.len() >= MAX_SUBGRAPH_NODES {
                    truncated = true;
                    break;
                }
                known.insert(end);
                seen.push(end);
                next.push(end);
            }
            frontier = next;
        }
        let set = ids_in(self.pg(), 2);
        let null = if self.pg() { "$3::text IS NULL" } else { "$3 IS NULL" };
        let sql = format!(
            "SELECT {REL_COLUMNS} FROM graph_relationships r WHERE r.organization_id = $1 \
             AND r.from_id IN {set} AND r.to_id IN {set} AND ({null} OR r.integration = $3) ORDER BY r.id LIMIT $4"
        );
        let rows: Vec<RelRow> = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(id_list(&seen)).bind(integration)
                .bind(per_level).fetch_all(pool).await)?;
        truncated |= rows.len() > MAX_SUBGRAPH_RELATIONSHIPS;
        let rels = rows
            .into_iter()
            .take(MAX_SUBGRAPH_RELATIONSHIPS)
            .map(GraphRelationship::from)
            .collect();
        let mut nodes = self.nodes_by_id(&seen).await?;
        nodes.sort_by_key(|n| (n.id != root, n.id));
        Ok((nodes, rels, truncated))
    }

    /// Labels with how many nodes carry each, most used first.
    pub async fn labels(&self, page: &GraphPage) -> StoreResult<Vec<NameCount>> {
        let null = if self.pg() { "$2::text IS NULL" } else { "$2 IS NULL" };
        let sql = format!(
            "SELECT l.label, COUNT(*) FROM graph_node_labels l JOIN graph_nodes n ON n.id = l.node_id \
             WHERE l.organization_id = $1 AND ({null} OR n.integration = $2) \
             GROUP BY l.label ORDER BY COUNT(*) DESC, l.label LIMIT $3 OFFSET $4"
        );
        let rows: Vec<(String, i64)> = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(&page.integration).bind(page.limit)
                .bind(page.skip).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(name, count)| NameCount { name, count })
            .collect())
    }

    /// Relationship types with how many relationships have each, most used first.
    pub async fn relationship_types(&self, page: &GraphPage) -> StoreResult<Vec<NameCount>> {
        let null = if self.pg() { "$2::text IS NULL" } else { "$2 IS NULL" };
        let sql = format!(
            "SELECT type, COUNT(*) FROM graph_relationships WHERE organization_id = $1 AND ({null} OR integration = $2) \
             GROUP BY type ORDER BY COUNT(*) DESC, type LIMIT $3 OFFSET $4"
        );
        let rows: Vec<(String, i64)> = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(self.org).bind(&page.integration).bind(page.limit)
                .bind(page.skip).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(name, count)| NameCount { name, count })
            .collect())
    }

    /// The sources of nodes and relationships, with their counts.
    pub async fn integrations(&self, page: &GraphPage) -> StoreResult<Vec<GraphIntegration>> {
        let rows: Vec<(String, i64, i64)> = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT name, CAST(SUM(nodes) AS BIGINT), CAST(SUM(rels) AS BIGINT) FROM ( \
                   SELECT integration AS name, COUNT(*) AS nodes, 0 AS rels FROM graph_nodes \
                     WHERE organization_id = $1 GROUP BY integration \
                   UNION ALL \
                   SELECT integration, 0, COUNT(*) FROM graph_relationships WHERE organization_id = $1 GROUP BY integration \
                 ) s GROUP BY name ORDER BY name LIMIT $2 OFFSET $3")
                .bind(self.org).bind(page.limit).bind(page.skip).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|(name, node_count, relationship_count)| GraphIntegration {
                name,
                node_count,
                relationship_count,
            })
            .collect())
    }

    /// Counts of everything (of one integration when given).
    pub async fn stats(&self, integration: Option<&str>) -> StoreResult<GraphStats> {
        let page = GraphPage {
            integration: integration.map(str::to_string),
            skip: 0,
            limit: i64::MAX,
        };
        let labels = self.labels(&page).await?;
        let types = self.relationship_types(&page).await?;
        let integrations: BTreeMap<String, i64> = self
            .integrations(&GraphPage {
                integration: None,
                skip: 0,
                limit: i64::MAX,
            })
            .await?
            .into_iter()
            .filter(|i| integration.is_none_or(|only| only == i.name))
            .map(|i| (i.name, i.node_count))
            .collect();
        let null = if self.pg() { "$2::text IS NULL" } else { "$2 IS NULL" };
        let (nodes, rels): (i64, i64) = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(format!(
                "SELECT (SELECT COUNT(*) FROM graph_nodes WHERE organization_id = $1 AND ({null} OR integration = $2)), \
                        (SELECT COUNT(*) FROM graph_relationships WHERE organization_id = $1 AND ({null} OR integration = $2))")))
                .bind(self.org).bind(integration).fetch_one(pool).await)?;
        Ok(GraphStats {
            node_count: nodes,
            relationship_count: rels,
            labels: labels.into_iter().map(|l| (l.name, l.count)).collect(),
            relationship_types: types.into_iter().map(|t| (t.name, t.count)).collect(),
            integrations,
        })
    }

    /// Deletes a user's node and its relationships; the control plane's nodes go with their
    /// entities only ([`StoreError::Conflict`]).
    pub async fn delete_node(&self, id: Uuid) -> StoreResult<()> {
        let node = self.get_node(id).await?;
        if node.integration == CONTROL_PLANE {
            return Err(StoreError::Conflict(
                "this node is projected from the control plane; delete the entity instead".into(),
            ));
        }
        with_db!(self.db, pool =>
            sqlx::query("DELETE FROM graph_nodes WHERE organization_id = $1 AND id = $2 AND integration <> 'control_plane'")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn delete_relationship(&self, id: Uuid) -> StoreResult<()> {
        let found: Option<String> = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT integration FROM graph_relationships WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_optional(pool).await)?;
        match found.as_deref() {
            None => Err(StoreError::NotFound),
            Some(CONTROL_PLANE) => Err(StoreError::Conflict(
                "this relationship is projected from the control plane; change the entities instead".into(),
            )),
            Some(_) => {
                with_db!(self.db, pool =>
                    sqlx::query("DELETE FROM graph_relationships WHERE organization_id = $1 AND id = $2")
                        .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
                Ok(())
            }
        }
    }

    /// Deletes everything one source wrote: its nodes (with every relationship touching them)
    /// and its relationships. Answers how many nodes and relationships went.
    pub async fn delete_integration(&self, integration: &str) -> StoreResult<(u64, u64)> {
        if integration == CONTROL_PLANE {
            return Err(StoreError::Conflict(
                "the control plane's projection goes with its entities only".into(),
            ));
        }
        let (nodes, rels) = write_tx!(self.db, tx, _pg => {
            let rels = sqlx::query("DELETE FROM graph_relationships WHERE organization_id = $1 AND integration = $2")
                .bind(self.org).bind(integration).execute(&mut *tx).await?.rows_affected();
            let nodes = sqlx::query("DELETE FROM graph_nodes WHERE organization_id = $1 AND integration = $2")
                .bind(self.org).bind(integration).execute(&mut *tx).await?.rows_affected();
            (nodes, rels)
        });
        if nodes == 0 && rels == 0 {
            return Err(StoreError::NotFound);
        }
        Ok((nodes, rels))
    }
}
