//! The PostgreSQL dialect's shape (run against a real server elsewhere), and the organization
//! filter on every table instance in both dialects.

use cp_cypher::{Bind, Dialect, compile};

fn pg(query: &str) -> cp_cypher::Compiled {
    compile(query, Dialect::Postgres).unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// Each `graph_* alias` in the SQL has `alias.organization_id = $1`, as often as it appears.
fn assert_org_scoped(sql: &str) {
    let words: Vec<&str> = sql
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    let mut tables = 0;
    for pair in words.windows(2) {
        if matches!(pair[0], "graph_nodes" | "graph_node_labels" | "graph_relationships") {
            tables += 1;
            let filter = format!("{}.organization_id = $1", pair[1]);
            assert!(
                sql.contains(&filter),
                "{} is not filtered by organization: {sql}",
                pair[1]
            );
        }
    }
    assert!(tables > 0);
    assert!(sql.matches(".organization_id = $1").count() >= tables, "{sql}");
}

const QUERIES: &[&str] = &[
    "MATCH (d:Database {name:'payments-db'})<-[:DEPENDS_ON]-(s:Service)<-[:OWNS]-(t:Team) RETURN s.name AS service, t.name AS owner ORDER BY service",
    "MATCH (n) WHERE n:Service AND NOT n:Team RETURN n",
    "MATCH (a)-[r:A|B {w: 1}]-(b) RETURN r, type(r)",
    "MATCH (a:Service {port: 80})-[:CALLS*1..3]->(b) RETURN b.name",
    "MATCH (a)<-[:CALLS|DEPENDS_ON*2]-(b:Team {name: 'x'}) RETURN a.name",
    "MATCH (a)-[*..2]-(b), (b)-->(c) WHERE c:Database RETURN DISTINCT c.name",
    "MATCH (a), (b) MATCH (c) RETURN count(*)",
];

#[test]
fn every_table_is_organization_scoped() {
    for query in QUERIES {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let compiled = compile(query, dialect).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_org_scoped(&compiled.sql);
        }
    }
}

#[test]
fn binds_are_cast() {
    let c = pg("MATCH (s:Service {name: 'api', port: 8080})-[r:DEPENDS_ON]->(d) \
                WHERE s.ratio > 0.5 AND s.tier IN ['a', 'b'] AND s.up = true AND s.name CONTAINS 'p' \
                AND id(d) = '0190a0a0-0000-7000-8000-000000000000' \
                RETURN s.name AS name, r, count(DISTINCT d.kind) AS kinds ORDER BY name DESC");
    let sql = &c.sql;
    // Every placeholder after $1 carries a cast, and each bind is used.
    for (i, bind) in c.binds.iter().enumerate() {
        let cast = match bind {
            Bind::Text(_) => "::text",
            Bind::Json(_) => "::jsonb",
            Bind::Uuid(_) => "::uuid",
            Bind::Int(_) => "::bigint",
            Bind::Float(_) => "::double precision",
            Bind::Bool(_) => "::boolean",
        };
        assert!(
            sql.contains(&format!("${}{cast}", i + 2)),
            "${} {bind:?} in {sql}",
            i + 2
        );
    }
    assert!(!sql.contains(&format!("${}", c.binds.len() + 2)), "{sql}");
    assert!(c.binds.contains(&Bind::Json(serde_json::json!(8080))));
    assert!(c.binds.contains(&Bind::Json(serde_json::json!(0.5))));
    assert!(c.binds.contains(&Bind::Json(serde_json::json!(true))));
    assert!(c.binds.contains(&Bind::Text("name".into())), "bare keys in PostgreSQL");
    assert!(c.binds.iter().any(|b| matches!(b, Bind::Uuid(_))));
    // The indexed name column for the equality, jsonb for the rest, text for CONTAINS.
    assert!(sql.contains(".name = $"), "{sql}");
    assert!(sql.contains(".properties -> $"), "{sql}");
    assert!(sql.contains("strpos(("), "{sql}");
    assert!(sql.contains(".properties ->> $"), "{sql}");
    assert!(sql.contains("::jsonb, $"), "IN list of jsonb: {sql}");
    assert!(sql.contains("COUNT(DISTINCT NULLIF("), "{sql}");
    assert!(sql.contains("GROUP BY"), "{sql}");
    assert!(sql.contains("DESC NULLS FIRST LIMIT 1000"), "{sql}");
}

#[test]
fn string_operators_and_walks() {
    let c = pg("MATCH (s) WHERE s.a STARTS WITH 'x' AND s.b ENDS WITH 'y' RETURN s.a SKIP 10 LIMIT 5");
    assert!(
        c.sql.contains("starts_with((s") || c.sql.contains("starts_with((n"),
        "{}",
        c.sql
    );
    assert!(c.sql.contains("right(("), "{}", c.sql);
    assert!(c.sql.ends_with("LIMIT 5 OFFSET 10"), "{}", c.sql);
    assert_eq!(c.limit, 5);

    let c = pg("MATCH (a:Service)-[:CALLS*1..3]->(b) RETURN b.name");
    assert!(c.sql.starts_with("WITH RECURSIVE w"), "{}", c.sql);
    assert!(c.sql.contains("w.depth < 3"), "{}", c.sql);
    assert!(c.sql.contains("depth >= 1"), "{}", c.sql);
    assert!(c.sql.contains("e.type = $"), "{}", c.sql);
    assert!(c.sql.contains("e.from_id = w.dst"), "{}", c.sql);
}

#[test]
fn sqlite_uses_json_paths_for_keys() {
    let c = compile("MATCH (n) WHERE n.`odd key` = 1 RETURN n.port", Dialect::Sqlite).unwrap();
    assert!(c.binds.contains(&Bind::Text("$.\"odd key\"".into())), "{:?}", c.binds);
    assert!(c.binds.contains(&Bind::Text("$.\"port\"".into())), "{:?}", c.binds);
    assert!(c.binds.contains(&Bind::Int(1)));
    assert!(!c.sql.contains("::"), "{}", c.sql);
}
