//! The parser: every supported feature compiles; every refused feature names its clause.

use cp_cypher::{ColumnKind, CypherError, Dialect, compile};

fn ok(query: &str) {
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        if let Err(err) = compile(query, dialect) {
            panic!("{query:?} should compile for {dialect:?}: {err}");
        }
    }
}

fn err(query: &str) -> CypherError {
    match compile(query, Dialect::Sqlite) {
        Ok(compiled) => panic!("{query:?} should fail, compiled to {}", compiled.sql),
        Err(err) => err,
    }
}

fn clause(query: &str) -> String {
    err(query).clause
}

#[test]
fn supported_features_compile() {
    let queries = [
        "MATCH (n) RETURN n",
        "match (n:Service) return n.name",
        "MATCH (n:Service:Critical) RETURN n",
        "MATCH (:Service {name: 'a', port: 80, ratio: 0.5, up: true, gone: null}) RETURN count(*)",
        "MATCH () RETURN count(*)",
        "MATCH (a)-[r:DEPENDS_ON]->(b) RETURN a, r, b",
        "MATCH (a)<-[:DEPENDS_ON]-(b) RETURN a.name",
        "MATCH (a)-[:A|B]-(b) RETURN a.name",
        "MATCH (a)-[:A|:B]->(b) RETURN a.name",
        "MATCH (a)-->(b) RETURN a.name",
        "MATCH (a)<--(b) RETURN a.name",
        "MATCH (a)--(b) RETURN a.name",
        "MATCH (a)-[r {since: 2020}]->(b) RETURN r.since",
        "MATCH (a)-[:T*1..3]->(b) RETURN b.name",
        "MATCH (a)-[:T*2]->(b) RETURN b.name",
        "MATCH (a)-[:T*..2]->(b) RETURN b.name",
        "MATCH (a)-[*1..2]-(b) RETURN b.name",
        "MATCH (a)-[:T]->(b), (b)-[:U]->(c) RETURN c.name",
        "MATCH (a)-[:T]->(b) MATCH (b)-[:U]->(c) WHERE c.x = 1 RETURN c.name",
        "MATCH (n) WHERE n.a = 1 AND n.b <> 'x' AND n.c < 1.5 AND n.d > -2 AND n.e <= 3 AND n.f >= 4 RETURN n",
        "MATCH (n) WHERE n.a CONTAINS 'x' OR n.b STARTS WITH \"y\" OR n.c ENDS WITH 'z' RETURN n",
        "MATCH (n) WHERE n.a IN [1, 2.5, 'x', true, null] AND NOT n.b IN [] RETURN n",
        "MATCH (n) WHERE n.a IS NULL AND n.b IS NOT NULL RETURN n",
        "MATCH (n) WHERE NOT (n.a = 1 OR (n.b = 2 AND n.c = 3)) RETURN n",
        "MATCH (n) WHERE n:Service AND NOT n:Database:Team RETURN n",
        "MATCH (n) WHERE id(n) = '0190a0a0-0000-7000-8000-000000000000' RETURN n",
        "MATCH (n) WHERE n.active RETURN n",
        "MATCH (a)-[r]->(b) WHERE type(r) = 'T' AND type(r) IN ['A', 'B'] AND r.w > 1 RETURN a",
        "MATCH (a), (b) WHERE a = b AND id(a) = id(b) RETURN a",
        "MATCH (n) RETURN DISTINCT n.name AS name",
        "MATCH (n) RETURN id(n), labels(n), n.name AS name",
        "MATCH (a)-[r]->(b) RETURN type(r) AS t, count(*) AS c ORDER BY c DESC",
        "MATCH (n) RETURN count(n), count(DISTINCT n.kind), count(DISTINCT n)",
        "MATCH (n) RETURN n.name ORDER BY n.name ASC, n.port DESC, id(n) SKIP 5 LIMIT 10",
        "MATCH (n) RETURN n.name AS name ORDER BY name descending",
        "MATCH (`my node`:`My Label`) RETURN `my node`.`weird key`",
        "MATCH (n) RETURN n.name // a comment\n;",
        "/* leading */ MATCH (n) RETURN n LIMIT 1000;",
        "MATCH (n) WHERE n.s = 'it\\'s \\u00e9\\n' RETURN n",
        "MATCH (n) WHERE n.x = 1.5e3 RETURN n",
        "MATCH (`match`) RETURN `match`.name",
        "MATCH (create) RETURN create.set AS set",
    ];
    for query in queries {
        ok(query);
    }
}

#[test]
fn columns_are_named_by_alias_or_text() {
    let compiled = compile(
        "MATCH (s:Service)-[r]->(d) RETURN s, r, d.name, count(*), id(s) AS sid, labels(s), type(r)",
        Dialect::Sqlite,
    )
    .unwrap();
    let columns: Vec<(&str, ColumnKind)> = compiled.columns.iter().map(|c| (c.name.as_str(), c.kind)).collect();
    assert_eq!(
        columns,
        [
            ("s", ColumnKind::Node),
            ("r", ColumnKind::Relationship),
            ("d.name", ColumnKind::Value),
            ("count(*)", ColumnKind::Count),
            ("sid", ColumnKind::Id),
            ("labels(s)", ColumnKind::Labels),
            ("type(r)", ColumnKind::Type),
        ]
    );
    assert_eq!(compiled.sql_width(), 5 + 5 + 5);
    assert_eq!(compiled.limit, 1000);
    assert!(compiled.sql.ends_with("LIMIT 1000"), "{}", compiled.sql);
}

#[test]
fn write_and_procedure_clauses_are_named() {
    let cases = [
        ("CREATE (n:Service {name: 'x'})", "CREATE"),
        ("create (n) return n", "CREATE"),
        ("MERGE (n:Service {name: 'x'}) RETURN n", "MERGE"),
        ("MATCH (n) DELETE n", "DELETE"),
        ("MATCH (n) DETACH DELETE n", "DETACH DELETE"),
        ("MATCH (n) SET n.x = 1", "SET"),
        ("MATCH (n) SET n.x = 1 RETURN n", "SET"),
        ("MATCH (n) REMOVE n.x", "REMOVE"),
        ("CALL db.labels()", "CALL"),
        ("MATCH (n) CALL { MATCH (m) RETURN m } RETURN n", "CALL"),
        ("LOAD CSV FROM 'file:///x' AS row RETURN row", "LOAD CSV"),
        ("UNWIND [1, 2] AS x RETURN x", "UNWIND"),
        ("MATCH (n) WITH n RETURN n", "WITH"),
        ("MATCH (n) WHERE n.name STARTS WITH 'a' WITH n RETURN n", "WITH"),
        ("MATCH (n) RETURN n UNION MATCH (m) RETURN m", "UNION"),
        ("MATCH (n) FOREACH (x IN [1] | SET n.x = x)", "FOREACH"),
        ("OPTIONAL MATCH (n) RETURN n", "OPTIONAL MATCH"),
        ("MATCH (n) OPTIONAL MATCH (n)-->(m) RETURN m", "OPTIONAL MATCH"),
        ("MATCH p = shortestPath((a)-[*]-(b)) RETURN p", "shortestPath"),
        ("MATCH (n) WHERE n.name = $name RETURN n", "parameters"),
        ("MATCH (n {name: $name}) RETURN n", "parameters"),
    ];
    for (query, expected) in cases {
        let err = err(query);
        assert_eq!(err.clause, expected, "{query:?}: {err}");
        assert!(err.message.contains("supported"), "{query:?}: {err}");
    }
}

#[test]
fn limits_and_lengths_are_enforced() {
    let cases = [
        ("MATCH (a)-[:T*..]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-[:T*]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-[*]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-[:T*1..]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-[:T*0..2]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-[:T*3..2]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-[r:T*1..2]->(b) RETURN b", "variable-length relationship"),
        ("MATCH (a)-->(b)-->(c)-->(d)-->(e) RETURN e", "MATCH"),
        ("MATCH (a)-[*1..4]->(b) RETURN b", "MATCH"),
        ("MATCH (a)-[*2..3]->(b)-->(c) RETURN c", "MATCH"),
        ("MATCH (a)-->(b), (c)-->(d), (e)-->(f), (g)-->(h) RETURN a", "MATCH"),
        ("MATCH (n) RETURN n LIMIT 5000", "LIMIT"),
        ("MATCH (n) RETURN n LIMIT 1001", "LIMIT"),
        ("MATCH (n) RETURN n LIMIT 0", "LIMIT"),
        ("MATCH (n) RETURN n LIMIT 99999999999999999999999", "LIMIT"),
        ("MATCH (n) RETURN *", "RETURN"),
        ("MATCH (n) RETURN n.a + 1", "syntax"),
        ("MATCH (n) RETURN toUpper(n.name)", "RETURN"),
        ("MATCH (n) WHERE size(n.name) > 3 RETURN n", "WHERE"),
        ("MATCH (n) RETURN m", "RETURN"),
        ("MATCH (n) WHERE m.x = 1 RETURN n", "WHERE"),
        ("MATCH (n) RETURN n ORDER BY m.x", "ORDER BY"),
        ("MATCH (n) RETURN n ORDER BY n", "ORDER BY"),
        ("MATCH (n) RETURN DISTINCT n.a ORDER BY n.b", "ORDER BY"),
        ("MATCH (n) WHERE id(n) = 'not-a-uuid' RETURN n", "WHERE"),
        ("MATCH (n) WHERE id(n) > 'x' RETURN n", "WHERE"),
        ("MATCH (n) WHERE n.x = [1] RETURN n", "WHERE"),
        ("MATCH (n) WHERE n.x CONTAINS 1 RETURN n", "WHERE"),
        ("MATCH (n) WHERE n.`a\"b` = 1 RETURN n", "WHERE"),
        ("MATCH (n)-[n]->(m) RETURN n", "MATCH"),
        ("MATCH (a)-[r]->(b), (c)-[r]->(d) RETURN r", "MATCH"),
        ("MATCH (a)-[r]->(b), (r) RETURN r", "MATCH"),
        ("MATCH (n) RETURN n.name, n.name", "RETURN"),
        ("MATCH (n) RETURN n SKIP -1", "SKIP"),
    ];
    for (query, expected) in cases {
        let err = err(query);
        assert_eq!(err.clause, expected, "{query:?}: {err}");
    }
}

#[test]
fn syntax_errors_have_a_position() {
    for query in [
        "MATCH (n RETURN n",
        "MATCH (n) RETURN",
        "MATCH (n) WHERE RETURN n",
        "RETURN 1",
        "",
        "MATCH (n) RETURN n LIMIT",
        "MATCH (n) WHERE n.x = 'unterminated RETURN n",
        "MATCH (n) WHERE n.x = 'bad \\q escape' RETURN n",
    ] {
        let err = err(query);
        assert_eq!(err.clause, "syntax", "{query:?}: {err}");
        if !err.message.contains("escape") {
            assert!(err.message.contains("line 1, column"), "{query:?}: {err}");
        }
    }
    let err = err("MATCH (n)\nRETURN n n");
    assert!(err.message.starts_with("line 2, column 10"), "{err}");
    assert_eq!(err.to_string(), format!("syntax: {}", err.message));
}

#[test]
fn hostile_queries_fail_without_overflow() {
    let deep = format!(
        "MATCH (n) WHERE {}n.x = 1{} RETURN n",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    assert_eq!(clause(&deep), "query"); // over the size cap first
    let nested = format!(
        "MATCH (n) WHERE {}n.x = 1{} RETURN n",
        "(".repeat(5_000),
        ")".repeat(5_000)
    );
    assert_eq!(clause(&nested), "WHERE");
    let lists = format!(
        "MATCH (n) WHERE n.x IN {}1{} RETURN n",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    assert_eq!(clause(&lists), "WHERE");
    let big = format!("MATCH (n) WHERE n.name = '{}' RETURN n", "x".repeat(20 * 1024));
    assert_eq!(clause(&big), "query");
    // Within the caps: long flat chains stay shallow.
    let nots = format!("MATCH (n) WHERE {}n.x = 1 RETURN n", "NOT ".repeat(3_000));
    ok(&nots);
    let ors = format!("MATCH (n) WHERE n.x = 0{} RETURN n", " OR n.x = 1".repeat(200));
    ok(&ors);
    // Past the cap on conditions (SQLite's expression depth is 1000).
    let ors = format!("MATCH (n) WHERE n.x = 0{} RETURN n", " OR n.x = 1".repeat(1_000));
    assert_eq!(clause(&ors), "WHERE");
    // At the cap, on a test thread's 2 MiB stack, in every shape that nests.
    for prefix in ["(", "NOT (", "n.y = 2 AND (", "n.y = 2 OR NOT ("] {
        let query = format!(
            "MATCH (n) WHERE {}n.x = 1{} RETURN n",
            prefix.repeat(63),
            ")".repeat(63)
        );
        ok(&query);
    }
    let too_deep = format!("MATCH (n) WHERE {}n.x = 1{} RETURN n", "(".repeat(65), ")".repeat(65));
    assert_eq!(clause(&too_deep), "WHERE");
}

#[test]
fn no_user_text_reaches_the_sql() {
    let query = "MATCH (zebra:Zebralabel {quuxkey: 'xyzzyvalue'})-[r:Plughtype {frobkey: 5}]->(m) \
                 WHERE m.name = 'gruevalue' AND m.wibblekey CONTAINS 'wobblevalue' AND m:Fnordlabel \
                 RETURN zebra.snarkkey AS boojumalias, count(*) ORDER BY boojumalias";
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let compiled = compile(query, dialect).unwrap();
        let sql = compiled.sql.to_lowercase();
        for word in [
            "zebra", "quux", "xyzzy", "plugh", "frob", "grue", "wibble", "wobble", "fnord", "snark", "boojum",
        ] {
            assert!(!sql.contains(word), "{word} in {dialect:?} SQL: {sql}");
        }
    }
}

#[test]
fn query_size_is_bounded_beyond_the_byte_cap() {
    // Every one of these fits in 16 KiB yet would join, return or test too much.
    let patterns: Vec<String> = (0..33).map(|i| format!("(n{i})")).collect();
    assert_eq!(
        clause(&format!("MATCH {} RETURN count(*)", patterns.join(", "))),
        "MATCH"
    );
    let labels: String = (0..40).map(|i| format!(":L{i}")).collect();
    assert_eq!(clause(&format!("MATCH (n{labels}) RETURN n")), "MATCH");
    let items: Vec<String> = (0..33).map(|i| format!("n AS x{i}")).collect();
    assert_eq!(clause(&format!("MATCH (n) RETURN {}", items.join(", "))), "RETURN");
    let terms = vec!["n.a = 1"; 300].join(" OR ");
    assert_eq!(clause(&format!("MATCH (n) WHERE {terms} RETURN n")), "WHERE");
    ok(&format!("MATCH {} RETURN count(*)", patterns[..8].join(", ")));
}

#[test]
fn long_names_skip_the_name_index() {
    let long = "x".repeat(600);
    for q in [
        format!("MATCH (n {{name: '{long}'}}) RETURN n"),
        format!("MATCH (n) WHERE n.name IN ['{long}'] RETURN n"),
    ] {
        let sql = compile(&q, Dialect::Sqlite).unwrap().sql;
        assert!(!sql.contains(".name ="), "{sql}");
        assert!(!sql.contains(".name IN"), "{sql}");
    }
    let sql = compile("MATCH (n {name: 'short'}) RETURN n", Dialect::Sqlite)
        .unwrap()
        .sql;
    assert!(sql.contains(".name = "), "{sql}");
}
