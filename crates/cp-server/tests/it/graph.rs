//! The context graph: the control plane's entities projected and kept current, the user's
//! inventory ingested and upserted, the client's reads at both prefixes, and read-only Cypher
//! (every supported feature, and a 422 naming the clause for the rest).

use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_error, json};

const G: &str = "/api/v1/graph";
/// Where the official client calls the same routes.
const CLIENT: &str = "/api/v1/context-graph/api/v1/graph";

async fn query(app: &TestApp, q: &str) -> Value {
    let r = app.post(&format!("{G}/query"), json!({"query": q})).await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 200, "{q}: {v}");
    v
}

/// The values of column `col` of every row.
fn column(v: &Value, col: &str) -> Vec<Value> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[col].clone())
        .collect()
}

async fn node_of(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("{G}/nodes/{id}")).await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn rels_of(app: &TestApp, id: &str, params: &str) -> Vec<(String, String, String)> {
    let v = json(app.get(&format!("{G}/nodes/{id}/relationships?{params}")).await).await;
    let mut out: Vec<(String, String, String)> = v["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().into(),
                r["from"].as_str().unwrap().into(),
                r["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    out.sort();
    out
}

/// An inventory: two services depending on a database, the teams that own them, and a
/// cluster the database runs on.
async fn inventory(app: &TestApp) {
    let r = app.post(&format!("{G}/nodes"), json!({"nodes": [
        {"external_id": "svc/payments-api", "labels": ["Service"], "integration": "catalog",
         "properties": {"name": "payments-api", "tier": 1, "language": "rust"}},
        {"external_id": "svc/billing", "labels": ["Service"], "integration": "catalog",
         "properties": {"name": "billing", "tier": 2, "language": "python"}},
        {"external_id": "svc/search", "labels": ["Service"], "integration": "catalog",
         "properties": {"name": "search", "tier": 3, "language": "go"}},
        {"external_id": "db/payments-db", "labels": ["Database", "Stateful"], "integration": "catalog",
         "properties": {"name": "payments-db", "engine": "postgres", "port": 5432}},
        {"external_id": "team/payments", "labels": ["Team"], "integration": "directory",
         "properties": {"name": "payments-team", "slack": "#payments"}},
        {"external_id": "team/billing", "labels": ["Team"], "integration": "directory",
         "properties": {"name": "billing-team"}},
        {"external_id": "k8s/prod", "labels": ["Cluster"], "integration": "catalog", "properties": {"name": "prod"}},
    ]})).await;
    assert_eq!(r.status(), 200);
    let ext = |i: &str, e: &str| json!({"integration": i, "external_id": e});
    let r = app.post(&format!("{G}/relationships"), json!({"relationships": [
        {"type": "DEPENDS_ON", "from": ext("catalog", "svc/payments-api"), "to": ext("catalog", "db/payments-db"),
         "properties": {"critical": true}},
        {"type": "DEPENDS_ON", "from": ext("catalog", "svc/billing"), "to": ext("catalog", "db/payments-db")},
        {"type": "OWNS", "from": ext("directory", "team/payments"), "to": ext("catalog", "svc/payments-api")},
        {"type": "OWNS", "from": ext("directory", "team/billing"), "to": ext("catalog", "svc/billing")},
        {"type": "RUNS_ON", "from": ext("catalog", "db/payments-db"), "to": ext("catalog", "k8s/prod")},
    ]})).await;
    let status = r.status();
    let v = json(r).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["created"], 5);
}

both_backends! {
    async fn control_plane_entities_are_projected_and_kept_current(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let model = app.id_of("/api/v1/models", json!({"value": "gpt-4o", "label": "GPT-4o", "provider": "openai"})).await;
        let skill = app.id_of("/api/v1/skills", json!({"name": "shell", "type": "shell"})).await;
        let agent = app.id_of("/api/v1/agents", json!({"name": "deployer", "description": "ships", "model_id": model})).await;
        let helper = app.id_of("/api/v1/agents", json!({"name": "helper"})).await;
        let r = app.post(&format!("/api/v1/skills/associations/agents/{agent}/skills"), json!({"skill_id": skill})).await;
        assert!(r.status().is_success(), "{}", json(r).await);
        let team = app.id_of("/api/v1/teams", json!({"name": "release", "configuration": {"member_ids": [agent, helper]}})).await;

        let node = node_of(&app, &agent).await;
        assert_eq!((node["labels"].clone(), node["integration"].as_str()), (json!(["Agent"]), Some("control_plane")));
        assert_eq!(node["external_id"], agent.as_str());
        assert_eq!((node["properties"]["name"].as_str(), node["properties"]["description"].as_str()), (Some("deployer"), Some("ships")));
        let (projects, out): (Vec<_>, Vec<_>) =
            rels_of(&app, &agent, "direction=outgoing").await.into_iter().partition(|r| r.0 == "BELONGS_TO");
        assert_eq!(projects.len(), 1, "the agent is in the default project");
        let mut want = vec![
            ("MEMBER_OF".to_string(), agent.clone(), team.clone()),
            ("USES_MODEL".to_string(), agent.clone(), model.clone()),
            ("USES_SKILL".to_string(), agent.clone(), skill.clone()),
        ];
        want.sort();
        assert_eq!(out, want);
        assert_eq!(rels_of(&app, &team, "direction=incoming&relationship_type=MEMBER_OF").await.len(), 2);

        // Updates follow: a rename, another model, a membership change.
        let other = app.id_of("/api/v1/models", json!({"value": "claude", "label": "Claude", "provider": "anthropic"})).await;
        let r = app.req(Method::PATCH, &format!("/api/v1/agents/{agent}"))
            .json(&json!({"name": "shipper", "model_id": other})).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", json(r).await);
        assert_eq!(node_of(&app, &agent).await["properties"]["name"], "shipper");
        let models: Vec<_> = rels_of(&app, &agent, "relationship_type=USES_MODEL").await;
        assert_eq!(models, vec![("USES_MODEL".into(), agent.clone(), other.clone())]);
        let r = app.req(Method::PATCH, &format!("/api/v1/teams/{team}"))
            .json(&json!({"configuration": {"member_ids": [helper]}})).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", json(r).await);
        assert_eq!(rels_of(&app, &team, "direction=incoming").await, vec![("MEMBER_OF".into(), helper.clone(), team.clone())]);

        // Deletes take the node and every relationship touching it.
        let r = app.req(Method::DELETE, &format!("/api/v1/agents/{helper}")).send().await.unwrap();
        assert!(r.status().is_success());
        assert_error(app.get(&format!("{G}/nodes/{helper}")).await, 404, "NOT_FOUND").await;
        assert!(rels_of(&app, &team, "relationship_type=MEMBER_OF").await.is_empty());
        let r = app.req(Method::DELETE, &format!("/api/v1/teams/{team}")).send().await.unwrap();
        assert!(r.status().is_success());
        assert_error(app.get(&format!("{G}/nodes/{team}")).await, 404, "NOT_FOUND").await;

        // The projection is the control plane's alone.
        let r = app.req(Method::DELETE, &format!("{G}/nodes/{agent}")).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        let r = app.post(&format!("{G}/nodes"), json!({"nodes": [{"external_id": agent, "labels": ["Agent"], "integration": "control_plane"}]})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let stats = json(app.get(&format!("{CLIENT}/stats")).await).await;
        assert_eq!((stats["labels"]["Agent"].as_i64(), stats["labels"]["Skill"].as_i64(), stats["labels"].get("Team")), (Some(1), Some(1), None), "{stats}");
        assert_eq!(stats["integrations"].as_object().unwrap().len(), 1, "{stats}");
        // Another organization sees none of it.
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        let r = app.req_as(&stranger, Method::GET, &format!("{G}/nodes/{agent}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
    }

    async fn inventory_is_ingested_upserted_and_deleted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        inventory(&app).await;
        // The same node again updates it: labels and properties replaced, the id kept.
        let before = json(app.post(&format!("{G}/nodes/search"), json!({"property_filters": {"name": "billing"}})).await).await;
        let id = before["nodes"][0]["id"].as_str().unwrap().to_string();
        let r = app.post(&format!("{G}/nodes"), json!({"nodes": [
            {"external_id": "svc/billing", "labels": ["Service", "Legacy"], "integration": "catalog", "properties": {"name": "billing", "tier": 1}},
            {"external_id": "svc/ledger", "labels": ["Service"], "integration": "catalog", "properties": {"name": "ledger"}},
        ]})).await;
        let v = json(r).await;
        assert_eq!((v["created"].as_u64(), v["updated"].as_u64()), (Some(1), Some(1)), "{v}");
        assert_eq!(v["nodes"][0]["id"], id.as_str());
        let node = node_of(&app, &id).await;
        assert_eq!((node["labels"].clone(), node["properties"].clone()), (json!(["Service", "Legacy"]), json!({"name": "billing", "tier": 1})));
        // A relationship again updates its properties; ends may be ids.
        let db = json(app.post(&format!("{G}/nodes/search"), json!({"label": "Database"})).await).await["nodes"][0]["id"].as_str().unwrap().to_string();
        let r = app.post(&format!("{G}/relationships"), json!({"relationships": [
            {"type": "DEPENDS_ON", "from": id, "to": db, "properties": {"since": 2024}},
        ]})).await;
        let v = json(r).await;
        assert_eq!((v["created"].as_u64(), v["updated"].as_u64()), (Some(0), Some(1)), "{v}");
        assert_eq!(v["relationships"][0]["properties"], json!({"since": 2024}));
        assert_eq!(v["relationships"][0]["integration"], "catalog", "the from node's source by default");

        // Unknown ends, bad names, oversize batches: 422 naming the input.
        let ghost = uuid::Uuid::now_v7();
        for (body, field) in [
            (json!({"relationships": [{"type": "X", "from": ghost, "to": db}]}), "relationships[0].from"),
            (json!({"relationships": [{"type": "X", "from": db, "to": {"integration": "catalog", "external_id": "nope"}}]}), "relationships[0].to"),
            (json!({"relationships": [{"type": "bad type", "from": db, "to": db}]}), "relationships[0].type"),
        ] {
            let v = assert_error(app.post(&format!("{G}/relationships"), body).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(v["details"]["field"], field, "{v}");
        }
        // The projection's own edges between its nodes are not the user's to write.
        let agent = app.id_of("/api/v1/agents", json!({"name": "pilot"})).await;
        let model = json(app.post(&format!("{G}/nodes/search"), json!({"label": "Model"})).await).await["nodes"][0]["id"].as_str().unwrap().to_string();
        let v = assert_error(app.post(&format!("{G}/relationships"), json!({"relationships": [
            {"type": "USES_MODEL", "from": agent, "to": model, "integration": "mine"}]})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(v["details"]["field"], "relationships[0].type");
        // A name too long for the index is stored and found all the same.
        let long = "n".repeat(3000);
        let r = app.post(&format!("{G}/nodes"), json!({"nodes": [{"external_id": "long", "labels": ["X"], "integration": "catalog", "properties": {"name": long}}]})).await;
        assert_eq!(r.status(), 200);
        let v = json(app.post(&format!("{G}/nodes/search"), json!({"property_filters": {"name": long}})).await).await;
        assert_eq!(v["count"], 1, "{v}");
        let v = query(&app, &format!("MATCH (x:X {{name: '{long}'}}) RETURN x.name AS n")).await;
        assert_eq!(v["count"], 1);
        let many: Vec<Value> = (0..1001).map(|i| json!({"external_id": format!("n{i}"), "labels": ["X"], "integration": "bulk"})).collect();
        assert_error(app.post(&format!("{G}/nodes"), json!({"nodes": many})).await, 422, "VALIDATION_ERROR").await;
        let v = assert_error(app.post(&format!("{G}/nodes"), json!({"nodes": [{"external_id": "x", "labels": ["1x"], "integration": "c"}]})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(v["details"]["field"], "nodes[0].labels");
        // A member writes, a viewer only reads; another organization's ids are unknown.
        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, Method::POST, &format!("{G}/nodes")).json(&json!({"nodes": []})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        assert_eq!(app.req_as(&viewer, Method::GET, &format!("{G}/nodes")).send().await.unwrap().status(), 200);
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        let r = app.req_as(&stranger, Method::POST, &format!("{G}/relationships"))
            .json(&json!({"relationships": [{"type": "X", "from": id, "to": db, "integration": "mine"}]})).send().await.unwrap();
        assert_error(r, 422, "VALIDATION_ERROR").await;
        let r = app.req_as(&stranger, Method::DELETE, &format!("{G}/nodes/{id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;

        // Deleting a node takes its relationships; deleting a source takes all it wrote.
        let r = app.req(Method::DELETE, &format!("{G}/nodes/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(rels_of(&app, &db, "direction=incoming").await.len(), 1);
        let rel = json(app.get(&format!("{G}/nodes/{db}/relationships?direction=incoming")).await).await["relationships"][0]["id"].as_str().unwrap().to_string();
        let r = app.req(Method::DELETE, &format!("{G}/relationships/{rel}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(rels_of(&app, &db, "direction=incoming").await.is_empty());
        let r = app.req(Method::DELETE, &format!("{G}/integrations/directory")).send().await.unwrap();
        assert_eq!(json(r).await["nodes"], 2);
        let v = json(app.get(&format!("{G}/integrations")).await).await;
        let names: Vec<&str> = v["integrations"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["catalog", "control_plane"]);
        let r = app.req(Method::DELETE, &format!("{G}/integrations/control_plane")).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
    }

    async fn the_clients_reads_answer_at_both_prefixes(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        inventory(&app).await;
        for prefix in [G, CLIENT] {
            let v = json(app.get(&format!("{prefix}/nodes?integration=catalog&skip=1&limit=2")).await).await;
            assert_eq!((v["count"].as_u64(), v["total"].as_u64(), v["skip"].as_u64()), (Some(2), Some(5), Some(1)), "{v}");
            let v = json(app.post(&format!("{prefix}/nodes/search?limit=10"), json!({"labels": ["Database", "Stateful"], "property_filters": {"port": 5432}})).await).await;
            assert_eq!(v["nodes"][0]["properties"]["name"], "payments-db", "{v}");
            let v = json(app.post(&format!("{prefix}/nodes/search"), json!({"label": "Service", "property_filters": {"language": "go"}})).await).await;
            assert_eq!(v["count"], 1);
            let v = json(app.post(&format!("{prefix}/nodes/search/text"), json!({"search_text": "PAYMENTS"})).await).await;
            assert_eq!(v["count"], 3, "{v}");
            let v = json(app.post(&format!("{prefix}/nodes/search/text?integration=directory"), json!({"search_text": "#pay", "property": "slack"})).await).await;
            assert_eq!(v["nodes"][0]["properties"]["name"], "payments-team");
            let db = json(app.post(&format!("{prefix}/nodes/search"), json!({"label": "Database"})).await).await["nodes"][0]["id"].as_str().unwrap().to_string();
            let v = json(app.get(&format!("{prefix}/nodes/{db}/relationships?direction=incoming&relationship_type=DEPENDS_ON")).await).await;
            assert_eq!(v["count"], 2);
            let v = json(app.get(&format!("{prefix}/nodes/{db}/relationships?direction=outgoing")).await).await;
            assert_eq!(v["relationships"][0]["type"], "RUNS_ON");
            let v = json(app.post(&format!("{prefix}/subgraph"), json!({"node_id": db, "depth": 1})).await).await;
            assert_eq!((v["nodes"].as_array().unwrap().len(), v["relationships"].as_array().unwrap().len()), (4, 3), "{v}");
            assert_eq!(v["nodes"][0]["id"], db.as_str(), "the root comes first");
            let v = json(app.post(&format!("{prefix}/subgraph"), json!({"node_id": db, "depth": 2})).await).await;
            assert_eq!((v["nodes"].as_array().unwrap().len(), v["relationships"].as_array().unwrap().len()), (6, 5));
            let r = app.post(&format!("{prefix}/subgraph"), json!({"node_id": db, "depth": 4})).await;
            assert_error(r, 422, "VALIDATION_ERROR").await;
            let v = json(app.get(&format!("{prefix}/labels?integration=catalog")).await).await;
            assert_eq!(v["labels"][0], json!({"name": "Service", "count": 3}));
            let v = json(app.get(&format!("{prefix}/relationship-types")).await).await;
            assert_eq!(v["relationship_types"][0], json!({"name": "DEPENDS_ON", "count": 2}));
            let v = json(app.get(&format!("{prefix}/stats?integration=catalog")).await).await;
            assert_eq!((v["node_count"].as_i64(), v["relationship_count"].as_i64()), (Some(5), Some(3)), "{v}");
            let v = json(app.get(&format!("{prefix}/integrations")).await).await;
            assert_eq!(v["count"], 3);
            let v = query(&app, "MATCH (s:Service) RETURN count(*) AS n").await;
            assert_eq!(v["results"][0]["n"], 3);
        }
        let v = json(app.get("/api/v1/context-graph/health").await).await;
        assert_eq!(v["status"], "healthy");
        let r = app.anon(Method::GET, "/api/v1/context-graph/health").send().await.unwrap();
        assert_eq!(r.status(), 401);
        // Bad parameters are 422, unknown nodes 404.
        assert_error(app.get(&format!("{G}/nodes?limit=0")).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.get(&format!("{G}/nodes?integration=a%20b")).await, 422, "VALIDATION_ERROR").await;
        for body in [json!({"search_text": "0", "property": ""}), json!({"search_text": "0", "property": "a\"b"})] {
            assert_error(app.post(&format!("{G}/nodes/search/text"), body).await, 422, "VALIDATION_ERROR").await;
        }
        let r = app.post(&format!("{G}/nodes/search"), json!({"property_filters": {"$x": 1}})).await;
        assert_eq!(json(r).await["count"], 0, "a key is a key, not a path");
        let r = app.post(&format!("{G}/nodes/search"), json!({"property_filters": {"a\\b": 1}})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        // null matches a null property, not a missing one (alike on both databases).
        let v = json(app.post(&format!("{G}/nodes/search"), json!({"property_filters": {"missing": null}})).await).await;
        assert_eq!(v["count"], 0, "{v}");
        let ghost = uuid::Uuid::now_v7();
        assert_error(app.get(&format!("{G}/nodes/{ghost}/relationships")).await, 404, "NOT_FOUND").await;
        assert_error(app.post(&format!("{G}/subgraph"), json!({"node_id": ghost})).await, 404, "NOT_FOUND").await;
    }

    async fn cypher_reads_the_graph_and_refuses_the_rest(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        inventory(&app).await;
        // The question an agent asks: which services does payments-db serve, who owns them?
        let v = query(&app, "MATCH (d:Database {name: 'payments-db'})<-[:DEPENDS_ON]-(s:Service)<-[:OWNS]-(t:Team) \
            RETURN s.name AS service, t.name AS owner ORDER BY service").await;
        assert_eq!(v["columns"], json!(["service", "owner"]));
        assert_eq!(v["results"], json!([{"service": "billing", "owner": "billing-team"}, {"service": "payments-api", "owner": "payments-team"}]));
        // WHERE operators, on both nodes and relationships.
        for (q, want) in [
            ("MATCH (s:Service) WHERE s.tier = 1 RETURN s.name", json!(["payments-api"])),
            ("MATCH (s:Service) WHERE s.tier <> 1 RETURN s.name ORDER BY s.name", json!(["billing", "search"])),
            ("MATCH (s:Service) WHERE s.tier < 2 OR s.tier > 2 RETURN s.name ORDER BY s.tier DESC", json!(["search", "payments-api"])),
            ("MATCH (s:Service) WHERE s.name CONTAINS 'ill' RETURN s.name", json!(["billing"])),
            ("MATCH (s:Service) WHERE s.name STARTS WITH 'pay' AND NOT s.language = 'go' RETURN s.name", json!(["payments-api"])),
            ("MATCH (s:Service) WHERE s.language IN ['go', 'python'] RETURN s.name ORDER BY s.name", json!(["billing", "search"])),
            ("MATCH (s:Service)-[r:DEPENDS_ON]->(d) WHERE r.critical = true RETURN s.name", json!(["payments-api"])),
            ("MATCH (s:Service) WHERE s.missing IS NULL RETURN s.name ORDER BY s.name SKIP 1 LIMIT 1", json!(["payments-api"])),
        ] {
            let v = query(&app, q).await;
            let got: Vec<Value> = v["results"].as_array().unwrap().iter().map(|r| r.as_object().unwrap().values().next().unwrap().clone()).collect();
            assert_eq!(Value::Array(got), want, "{q}");
        }
        // Nodes and relationships come back whole; counts group; paths walk up to 3 hops.
        let v = query(&app, "MATCH (t:Team)-[r:OWNS]->(s) WHERE t.name = 'payments-team' RETURN t, r, labels(s) AS l, type(r) AS ty").await;
        let row = &v["results"][0];
        assert_eq!((row["t"]["labels"].clone(), row["t"]["integration"].as_str()), (json!(["Team"]), Some("directory")));
        assert_eq!((row["r"]["type"].as_str(), row["l"].clone(), row["ty"].as_str()), (Some("OWNS"), json!(["Service"]), Some("OWNS")));
        let v = query(&app, "MATCH (s:Service)-[:DEPENDS_ON]->(d:Database) RETURN d.name AS db, count(*) AS dependents").await;
        assert_eq!(v["results"], json!([{"db": "payments-db", "dependents": 2}]));
        let v = query(&app, "MATCH (t:Team)-[:OWNS]->()-[:DEPENDS_ON]->()-[:RUNS_ON]->(c:Cluster) RETURN DISTINCT c.name").await;
        assert_eq!(column(&v, "c.name"), [json!("prod")]);
        let v = query(&app, "MATCH (t:Team {name: 'billing-team'})-[*1..3]->(c:Cluster) RETURN c.name AS cluster").await;
        assert_eq!(column(&v, "cluster"), [json!("prod")]);
        let v = query(&app, "MATCH (d:Database)--(x) RETURN count(*) AS n").await;
        assert_eq!(column(&v, "n"), [json!(3)]);
        let v = query(&app, "match (a:Agent) return count(*) as n").await;
        assert_eq!(column(&v, "n"), [json!(0)]);

        // Another organization's identical graph never shows.
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        let r = app.req_as(&stranger, Method::POST, &format!("{G}/query"))
            .json(&json!({"query": "MATCH (s:Service) RETURN count(*) AS n"})).send().await.unwrap();
        assert_eq!(json(r).await["results"][0]["n"], 0);

        // Writes, procedures, unbounded paths and the rest: 422 naming the clause.
        for (q, clause) in [
            ("CREATE (n:Service {name: 'x'})", "CREATE"),
            ("MATCH (n) DELETE n", "DELETE"),
            ("MATCH (n) DETACH DELETE n", "DETACH DELETE"),
            ("MATCH (n) SET n.x = 1", "SET"),
            ("MERGE (n:X)", "MERGE"),
            ("CALL db.labels()", "CALL"),
            ("MATCH (a)-[*..]->(b) RETURN b", "variable-length relationship"),
            ("MATCH (a)-[*]->(b) RETURN b", "variable-length relationship"),
            ("MATCH (a)-->(b)-->(c)-->(d)-->(e) RETURN e", "MATCH"),
            ("MATCH (n) RETURN n LIMIT 5000", "LIMIT"),
        ] {
            let r = app.post(&format!("{G}/query"), json!({"query": q})).await;
            let v = assert_error(r, 422, "VALIDATION_ERROR").await;
            assert_eq!(v["details"]["clause"], clause, "{q}: {v}");
        }
        let v = assert_error(app.post(&format!("{G}/query"), json!({"query": "MATCH (n RETURN n"})).await, 422, "VALIDATION_ERROR").await;
        assert_eq!(v["details"]["clause"], "syntax");

        // An answer past 8 MiB is refused rather than built.
        let fat = json!({"blob": "b".repeat(60_000)});
        let nodes: Vec<Value> = (0..12).map(|i| json!({"external_id": format!("fat{i}"), "labels": ["Fat"], "integration": "bulk", "properties": fat})).collect();
        assert_eq!(app.post(&format!("{G}/nodes"), json!({"nodes": nodes})).await.status(), 200);
        let v = assert_error(app.post(&format!("{G}/query"), json!({"query": "MATCH (a:Fat), (b:Fat) RETURN a, b"})).await, 422, "VALIDATION_ERROR").await;
        assert!(v["message"].as_str().unwrap().contains("MiB"), "{v}");
        // A query past the time limit is stopped, and the server answers the next one at once.
        let started = std::time::Instant::now();
        let v = assert_error(app.post(&format!("{G}/query"), json!({"query": "MATCH (a), (b), (c), (d), (e), (f), (g), (h) RETURN count(*)"})).await, 422, "VALIDATION_ERROR").await;
        assert!(v["message"].as_str().unwrap().contains("longer than"), "{v}");
        assert!(started.elapsed() < std::time::Duration::from_secs(15));
        assert_eq!(query(&app, "MATCH (s:Service) RETURN count(*) AS n").await["results"][0]["n"], 3);
    }
}

/// A large ingestion on PostgreSQL refreshes the graph's statistics at once, not when
/// autovacuum gets to it (up to a minute later, with plans that walk a whole label meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_ingestion_refreshes_postgres_statistics() {
    use sqlx::Connection;
    let app = TestApp::spawn(crate::common::Backend::Postgres).await;
    // ANALYZE writes the row estimate it counted; a table never analyzed has -1.
    let estimate = || async {
        let mut c = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_scalar::<_, f32>(
            "SELECT reltuples FROM pg_class WHERE relname = 'graph_nodes' \
             AND relnamespace = current_schema()::regnamespace",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    };
    let nodes = |prefix: &str, n: usize| -> Value {
        let nodes: Vec<Value> = (0..n)
            .map(|i| json!({"external_id": format!("{prefix}{i}"), "labels": ["Service"], "integration": "inventory"}))
            .collect();
        json!({ "nodes": nodes })
    };
    let mut analyses = app.state.graph_analyses.subscribe();
    assert_eq!(app.post("/api/v1/graph/nodes", nodes("s", 10)).await.status(), 200);
    assert_eq!(app.post("/api/v1/graph/nodes", nodes("n", 600)).await.status(), 200);
    let done = tokio::time::timeout(std::time::Duration::from_secs(20), analyses.changed()).await;
    assert!(matches!(done, Ok(Ok(()))), "graph_nodes was not analyzed");
    // Counted after the large ingestion: the small one (under the threshold) did not take the
    // refresh that the 10 s spacing allows.
    let rows = estimate().await;
    assert!(rows >= 600.0, "{rows}");
}
