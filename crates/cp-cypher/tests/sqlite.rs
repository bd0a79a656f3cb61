//! Compiled SQLite statements run against the real schema (cp-store's migration) with a small
//! graph in two organizations.

use cp_cypher::{Bind, ColumnKind, Compiled, Dialect, compile};
use rusqlite::Connection;
use rusqlite::types::Value as Sql;
use serde_json::{Value, json};
use uuid::Uuid;

const ORG_A: &str = "org-a";
const ORG_B: &str = "org-b";

struct Graph {
    conn: Connection,
    ids: std::collections::HashMap<String, Uuid>,
}

impl Graph {
    fn new() -> Self {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE organizations (id TEXT PRIMARY KEY);")
            .unwrap();
        // The graph tables only: the triggers after them project other tables of the store.
        let migration = include_str!("../../cp-store/migrations/sqlite/0025_context_graph.sql");
        let tables = migration.split("CREATE TRIGGER").next().unwrap_or_default();
        conn.execute_batch(tables).unwrap();
        for org in [ORG_A, ORG_B] {
            conn.execute("INSERT INTO organizations (id) VALUES (?1)", [org])
                .unwrap();
        }
        let mut graph = Self {
            conn,
            ids: Default::default(),
        };
        let a = ORG_A;
        graph.node(
            a,
            "payments-api",
            &["Service"],
            json!({"port": 8080, "tier": "critical", "public": true, "cpu": 0.75, "k8s-namespace": "pay"}),
        );
        graph.node(
            a,
            "billing",
            &["Service"],
            json!({"port": 9090, "tier": "standard", "public": false, "cpu": 0.25}),
        );
        graph.node(
            a,
            "search",
            &["Service", "Experimental"],
            json!({"port": 10000, "cpu": 1.5}),
        );
        graph.node(
            a,
            "payments-db",
            &["Database"],
            json!({"port": 5432, "engine": "postgres"}),
        );
        graph.node(a, "payments-team", &["Team"], json!({}));
        graph.node(a, "billing-team", &["Team"], json!({}));
        graph.rel(a, "DEPENDS_ON", "payments-api", "payments-db", json!({"since": 2021}));
        graph.rel(a, "DEPENDS_ON", "billing", "payments-db", json!({"since": 2023}));
        graph.rel(a, "OWNS", "payments-team", "payments-api", json!({}));
        graph.rel(a, "OWNS", "billing-team", "billing", json!({}));
        graph.rel(a, "CALLS", "billing", "payments-api", json!({}));
        graph.rel(a, "CALLS", "search", "billing", json!({}));
        // Organization B: the same names, never visible to A.
        let b = ORG_B;
        graph.node(b, "b:payments-db", &["Database"], json!({"port": 5432}));
        graph.node(b, "b:evil-api", &["Service"], json!({"port": 1}));
        graph.node(b, "b:b-team", &["Team"], json!({}));
        graph.rel(b, "DEPENDS_ON", "b:evil-api", "b:payments-db", json!({}));
        graph.rel(b, "OWNS", "b:b-team", "b:evil-api", json!({}));
        graph
    }

    /// Inserts a node; in organization B `key` is prefixed `b:` and the name is the rest.
    fn node(&mut self, org: &str, key: &str, labels: &[&str], mut props: Value) {
        let name = key.trim_start_matches("b:");
        props["name"] = json!(name);
        let id = Uuid::now_v7();
        self.conn
            .execute(
                "INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, \
                 properties, name, created_at, updated_at) VALUES (?1, ?2, 'test', ?3, ?4, ?5, ?6, 'now', 'now')",
                rusqlite::params![
                    id.as_bytes().to_vec(),
                    org,
                    key,
                    json!(labels).to_string(),
                    props.to_string(),
                    name
                ],
            )
            .unwrap();
        for label in labels {
            self.conn
                .execute(
                    "INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (?1, ?2, ?3)",
                    rusqlite::params![id.as_bytes().to_vec(), org, label],
                )
                .unwrap();
        }
        self.ids.insert(key.to_string(), id);
    }

    fn rel(&mut self, org: &str, kind: &str, from: &str, to: &str, props: Value) {
        self.conn
            .execute(
                "INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, \
                 properties, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, 'test', ?6, 'now', 'now')",
                rusqlite::params![
                    Uuid::now_v7().as_bytes().to_vec(),
                    org,
                    kind,
                    self.ids[from].as_bytes().to_vec(),
                    self.ids[to].as_bytes().to_vec(),
                    props.to_string()
                ],
            )
            .unwrap();
    }

    fn id(&self, key: &str) -> String {
        self.ids[key].to_string()
    }

    /// Runs `query` as organization A; each SQL cell as JSON (JSON text parsed, blobs as uuids).
    fn run(&self, query: &str) -> Vec<Vec<Value>> {
        self.run_as(ORG_A, query).1
    }

    fn run_as(&self, org: &str, query: &str) -> (Compiled, Vec<Vec<Value>>) {
        let compiled = compile(query, Dialect::Sqlite).unwrap_or_else(|e| panic!("{query}: {e}"));
        let mut stmt = self
            .conn
            .prepare(&compiled.sql)
            .unwrap_or_else(|e| panic!("{}: {e}", compiled.sql));
        // Every bind is used and nothing else is a parameter.
        assert_eq!(stmt.parameter_count(), compiled.binds.len() + 1, "{}", compiled.sql);
        let org_index = stmt.parameter_index("$1").unwrap().expect("$1 is used");
        stmt.raw_bind_parameter(org_index, org).unwrap();
        for (i, bind) in compiled.binds.iter().enumerate() {
            let name = format!("${}", i + 2);
            let index = stmt
                .parameter_index(&name)
                .unwrap()
                .unwrap_or_else(|| panic!("{name} unused"));
            let value = match bind {
                Bind::Text(s) => Sql::Text(s.clone()),
                Bind::Int(i) => Sql::Integer(*i),
                Bind::Float(f) => Sql::Real(*f),
                Bind::Bool(b) => Sql::Integer(i64::from(*b)),
                Bind::Json(v) => Sql::Text(v.to_string()),
                Bind::Uuid(u) => Sql::Blob(u.as_bytes().to_vec()),
            };
            stmt.raw_bind_parameter(index, value).unwrap();
        }
        let width = stmt.column_count();
        assert_eq!(width, compiled.sql_width());
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            let cells = (0..width)
                .map(|i| match row.get::<_, Sql>(i).unwrap() {
                    Sql::Null => Value::Null,
                    Sql::Integer(i) => json!(i),
                    Sql::Real(f) => json!(f),
                    Sql::Text(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                    Sql::Blob(b) => json!(Uuid::from_slice(&b).unwrap().to_string()),
                })
                .collect();
            out.push(cells);
        }
        drop(rows);
        (compiled, out)
    }

    /// The first column of each row.
    fn column(&self, query: &str) -> Vec<Value> {
        self.run(query).into_iter().map(|row| row[0].clone()).collect()
    }
}

#[test]
fn services_served_by_payments_db_and_their_owners() {
    let g = Graph::new();
    let rows = g.run(
        "MATCH (d:Database {name:'payments-db'})<-[:DEPENDS_ON]-(s:Service)<-[:OWNS]-(t:Team) \
         RETURN s.name AS service, t.name AS owner ORDER BY service",
    );
    assert_eq!(
        rows,
        vec![
            vec![json!("billing"), json!("billing-team")],
            vec![json!("payments-api"), json!("payments-team")]
        ]
    );
}

#[test]
fn where_operators() {
    let g = Graph::new();
    let names = |filter: &str| {
        g.column(&format!(
            "MATCH (s:Service) WHERE {filter} RETURN s.name ORDER BY s.name"
        ))
    };
    assert_eq!(names("s.port = 8080"), [json!("payments-api")]);
    assert_eq!(names("s.port <> 8080"), [json!("billing"), json!("search")]);
    assert_eq!(names("s.port < 9090"), [json!("payments-api")]);
    assert_eq!(names("s.port > 9090"), [json!("search")]);
    assert_eq!(names("s.port <= 9090"), [json!("billing"), json!("payments-api")]);
    assert_eq!(names("s.port >= 9090"), [json!("billing"), json!("search")]);
    assert_eq!(names("9090 <= s.port"), [json!("billing"), json!("search")]);
    assert_eq!(names("s.cpu > 0.5"), [json!("payments-api"), json!("search")]);
    assert_eq!(names("s.public = true"), [json!("payments-api")]);
    assert_eq!(names("s.public = false"), [json!("billing")]);
    assert_eq!(names("s.public"), [json!("payments-api")]);
    assert_eq!(names("s.tier = 'critical'"), [json!("payments-api")]);
    assert_eq!(
        names("s.port = '8080'"),
        Vec::<Value>::new(),
        "a string is not a number"
    );
    assert_eq!(names("s.name CONTAINS 'pay'"), [json!("payments-api")]);
    assert_eq!(names("s.name CONTAINS 'PAY'"), Vec::<Value>::new(), "case-sensitive");
    assert_eq!(names("s.name CONTAINS '%'"), Vec::<Value>::new(), "no LIKE wildcards");
    assert_eq!(names("s.name STARTS WITH 'bill'"), [json!("billing")]);
    assert_eq!(
        names("s.name STARTS WITH ''"),
        [json!("billing"), json!("payments-api"), json!("search")]
    );
    assert_eq!(names("s.name ENDS WITH 'api'"), [json!("payments-api")]);
    assert_eq!(names("s.name ENDS WITH 'xxsearch'"), Vec::<Value>::new());
    assert_eq!(
        names("s.name IN ['billing', 'search', 'nope']"),
        [json!("billing"), json!("search")]
    );
    assert_eq!(
        names("s.port IN [8080, 10000]"),
        [json!("payments-api"), json!("search")]
    );
    assert_eq!(names("s.port IN []"), Vec::<Value>::new());
    assert_eq!(names("NOT s.port IN [8080, 10000]"), [json!("billing")]);
    assert_eq!(
        names("NOT s.name = 'billing'"),
        [json!("payments-api"), json!("search")]
    );
    assert_eq!(
        names("s.port = 8080 OR s.name = 'search'"),
        [json!("payments-api"), json!("search")]
    );
    assert_eq!(
        names("(s.port = 8080 OR s.port = 9090) AND s.tier = 'standard'"),
        [json!("billing")]
    );
    assert_eq!(names("s.tier IS NULL"), [json!("search")]);
    assert_eq!(names("s.tier IS NOT NULL"), [json!("billing"), json!("payments-api")]);
    assert_eq!(names("s.tier = null"), Vec::<Value>::new(), "null compares as null");
    assert_eq!(names("s:Experimental"), [json!("search")]);
    assert_eq!(names("NOT s:Experimental"), [json!("billing"), json!("payments-api")]);
    assert_eq!(names("s.`k8s-namespace` = 'pay'"), [json!("payments-api")]);
    assert_eq!(names(&format!("id(s) = '{}'", g.id("billing"))), [json!("billing")]);
    assert_eq!(names(&format!("id(s) IN ['{}']", g.id("search"))), [json!("search")]);
    assert_eq!(names(&format!("id(s) = '{}'", g.id("b:evil-api"))), Vec::<Value>::new());
}

#[test]
fn relationship_properties_types_and_returns() {
    let g = Graph::new();
    let rows = g.run("MATCH (s:Service)-[r:DEPENDS_ON]->(d) WHERE r.since >= 2022 RETURN s.name, r, r.since, type(r)");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row[0], json!("billing"));
    // r: id, type, from_id, to_id, properties
    assert_eq!(row[2], json!("DEPENDS_ON"));
    assert_eq!(row[3], json!(g.id("billing")));
    assert_eq!(row[4], json!(g.id("payments-db")));
    assert_eq!(row[5], json!({"since": 2023}));
    assert_eq!(row[6], json!(2023));
    assert_eq!(row[7], json!("DEPENDS_ON"));

    let rows = g.run("MATCH (a)-[r]->(b) WHERE type(r) = 'CALLS' RETURN a.name, b.name ORDER BY a.name");
    assert_eq!(
        rows,
        vec![
            vec![json!("billing"), json!("payments-api")],
            vec![json!("search"), json!("billing")]
        ]
    );
    let rows = g.run("MATCH (a)-[r {since: 2021}]->(b) RETURN a.name");
    assert_eq!(rows, vec![vec![json!("payments-api")]]);
}

#[test]
fn node_returns_ids_and_labels() {
    let g = Graph::new();
    let (compiled, rows) = g.run_as(ORG_A, "MATCH (d:Database) RETURN d, id(d), labels(d)");
    assert_eq!(
        compiled.columns.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [ColumnKind::Node, ColumnKind::Id, ColumnKind::Labels]
    );
    assert_eq!(rows.len(), 1, "organization B's database is not visible");
    let id = json!(g.id("payments-db"));
    assert_eq!(
        rows[0],
        vec![
            id.clone(),
            json!(["Database"]),
            json!({"name": "payments-db", "port": 5432, "engine": "postgres"}),
            json!("test"),
            json!("payments-db"),
            id,
            json!(["Database"]),
        ]
    );
    let rows = g.run("MATCH (s:Service) RETURN s.name, s.missing ORDER BY s.name LIMIT 1");
    assert_eq!(rows, vec![vec![json!("billing"), Value::Null]]);
}

#[test]
fn ordering_and_paging() {
    let g = Graph::new();
    let by_port = g.column("MATCH (s:Service) RETURN s.name ORDER BY s.port DESC");
    assert_eq!(
        by_port,
        [json!("search"), json!("billing"), json!("payments-api")],
        "numbers sort numerically"
    );
    let rows = g.run("MATCH (s:Service) RETURN s.name AS name, s.port AS port ORDER BY port SKIP 1 LIMIT 1");
    assert_eq!(rows, vec![vec![json!("billing"), json!(9090)]]);
    let tiers = g.column("MATCH (s:Service) RETURN s.name ORDER BY s.tier, s.name");
    assert_eq!(
        tiers,
        [json!("payments-api"), json!("billing"), json!("search")],
        "nulls last ascending"
    );
    let tiers = g.column("MATCH (s:Service) RETURN s.name ORDER BY s.tier DESC");
    assert_eq!(
        tiers,
        [json!("search"), json!("billing"), json!("payments-api")],
        "nulls first descending"
    );
    let (compiled, rows) = g.run_as(ORG_A, "MATCH (n) RETURN n.name LIMIT 2");
    assert_eq!((compiled.limit, rows.len()), (2, 2));
}

#[test]
fn counts_grouping_and_distinct() {
    let g = Graph::new();
    assert_eq!(g.run("MATCH (n) RETURN count(*)"), vec![vec![json!(6)]]);
    assert_eq!(g.run("MATCH ()-[r]->() RETURN count(r)"), vec![vec![json!(6)]]);
    assert_eq!(
        g.run("MATCH (s:Service) RETURN count(s.tier), count(DISTINCT s.tier)"),
        vec![vec![json!(2), json!(2)]]
    );
    let rows = g.run("MATCH (a)-[r]->(b) RETURN type(r) AS t, count(*) AS n ORDER BY n DESC, t");
    assert_eq!(
        rows,
        vec![
            vec![json!("CALLS"), json!(2)],
            vec![json!("DEPENDS_ON"), json!(2)],
            vec![json!("OWNS"), json!(2)],
        ]
    );
    let rows = g.run("MATCH (s:Service)-[:DEPENDS_ON]->(d) RETURN d.name, count(DISTINCT s) AS users");
    assert_eq!(rows, vec![vec![json!("payments-db"), json!(2)]]);
    let rows = g.run("MATCH (s:Service)-[:DEPENDS_ON]->(d) RETURN d, count(*)");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][5], json!(2));
    assert_eq!(
        g.column("MATCH (s:Service)-[:DEPENDS_ON]->(d) RETURN DISTINCT d.name"),
        [json!("payments-db")]
    );
    assert_eq!(g.column("MATCH (s:Service)-[:DEPENDS_ON]->(d) RETURN d.name").len(), 2);
}

#[test]
fn undirected_and_multiple_patterns() {
    let g = Graph::new();
    let around = g.column("MATCH (a:Service {name: 'billing'})--(b) RETURN b.name ORDER BY b.name");
    assert_eq!(
        around,
        [
            json!("billing-team"),
            json!("payments-api"),
            json!("payments-db"),
            json!("search")
        ]
    );
    let calls = g.column("MATCH (a {name: 'billing'})-[:CALLS|OWNS]-(b) RETURN b.name ORDER BY b.name");
    assert_eq!(calls, [json!("billing-team"), json!("payments-api"), json!("search")]);
    // The same variable in two patterns and two MATCH clauses is one node.
    let owners = g.column(
        "MATCH (t:Team)-[:OWNS]->(s) MATCH (s)-[:DEPENDS_ON]->(d:Database), (x {name: 'search'})-[:CALLS]->(s) \
         RETURN t.name",
    );
    assert_eq!(owners, [json!("billing-team")]);
    // Relationship uniqueness: a--b--a needs two different relationships.
    let back = g.column("MATCH (a {name: 'payments-team'})--(b)--(c) RETURN c.name ORDER BY c.name");
    assert_eq!(back, [json!("billing"), json!("payments-db")]);
    let same = g.run("MATCH (a:Team), (b:Team) WHERE a = b RETURN a.name");
    assert_eq!(same.len(), 2);
}

#[test]
fn variable_length_walks() {
    let g = Graph::new();
    let reach =
        g.column("MATCH (s:Service {name:'search'})-[:CALLS|DEPENDS_ON*1..2]->(x) RETURN x.name ORDER BY x.name");
    assert_eq!(reach, [json!("billing"), json!("payments-api"), json!("payments-db")]);
    let two = g.column("MATCH (s {name:'search'})-[:CALLS|DEPENDS_ON*2]->(x) RETURN x.name ORDER BY x.name");
    assert_eq!(two, [json!("payments-api"), json!("payments-db")]);
    let upto = g.column("MATCH (s {name:'search'})-[*..3]->(x) RETURN x.name ORDER BY x.name");
    assert_eq!(upto, [json!("billing"), json!("payments-api"), json!("payments-db")]);
    // Anchored on the right-hand node: the walk runs backwards from it.
    let callers = g.column("MATCH (x)-[:CALLS*1..3]->(t:Service {name:'payments-api'}) RETURN x.name ORDER BY x.name");
    assert_eq!(callers, [json!("billing"), json!("search")]);
    let incoming = g.column("MATCH (d:Database)<-[:DEPENDS_ON|CALLS*1..2]-(x) RETURN x.name ORDER BY x.name");
    assert_eq!(incoming, [json!("billing"), json!("payments-api"), json!("search")]);
    let either = g.column("MATCH (d:Database)-[:DEPENDS_ON*2]-(x) RETURN x.name ORDER BY x.name");
    // payments-db - payments-api - payments-db and the like return to the start at depth 2.
    assert_eq!(either, [json!("payments-db")]);
    let mixed = g.column("MATCH (t:Team)-[:OWNS]->(s)-[:CALLS*1..2]->(x) WHERE t.name = 'billing-team' RETURN x.name");
    assert_eq!(mixed, [json!("payments-api")]);
    let counted = g.run("MATCH (s:Service)-[:CALLS*1..2]->(x) RETURN count(*)");
    assert_eq!(counted, vec![vec![json!(3)]]);
}

#[test]
fn other_organizations_are_invisible() {
    let g = Graph::new();
    assert_eq!(
        g.run("MATCH (d {name: 'payments-db'}) RETURN count(*)"),
        vec![vec![json!(1)]]
    );
    let users = g.column("MATCH (d:Database {name:'payments-db'})<-[:DEPENDS_ON]-(s) RETURN s.name ORDER BY s.name");
    assert_eq!(users, [json!("billing"), json!("payments-api")]);
    assert!(!g.column("MATCH (n) RETURN n.name").contains(&json!("evil-api")));
    let walked = g.column("MATCH (x)-[*1..3]-(y) RETURN DISTINCT y.name");
    assert!(!walked.contains(&json!("evil-api")));
    assert!(!walked.contains(&json!("b-team")));
    // As organization B, only B's graph.
    let (_, rows) = g.run_as(
        ORG_B,
        "MATCH (d:Database {name:'payments-db'})<-[:DEPENDS_ON]-(s:Service)<-[:OWNS]-(t:Team) RETURN s.name, t.name",
    );
    assert_eq!(rows, vec![vec![json!("evil-api"), json!("b-team")]]);
    // Even with an id of A's node.
    let (_, rows) = g.run_as(
        ORG_B,
        &format!("MATCH (n) WHERE id(n) = '{}' RETURN n", g.id("payments-db")),
    );
    assert!(rows.is_empty());
}
