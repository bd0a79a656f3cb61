//! Knowledge items: CRUD with roles and organizations kept apart, the content limit, and
//! full-text search ranked by BM25 with highlighted passages, filtered by tags, whatever the
//! query text holds.

use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::worker::TestWorker;
use crate::common::{TestApp, assert_error, encode, json};

async fn create(app: &TestApp, body: Value) -> Value {
    let r = app.post("/api/v1/knowledge", body).await;
    assert_eq!(r.status(), 201);
    json(r).await
}

both_backends! {
    async fn knowledge_items_are_crud_per_organization(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let project = app.id_of("/api/v1/projects", json!({"name": "Payments", "key": "PAY"})).await;
        let item = create(&app, json!({
            "title": "Payments runbook", "content": "# Restart\nRestart the payments database with care.",
            "tags": ["ops", " db ", "ops"], "source": "https://wiki/payments", "project_id": project,
        })).await;
        let id = item["id"].as_str().unwrap().to_string();
        assert_eq!(item["tags"], json!(["ops", "db"]), "tags are trimmed and kept once");
        assert_eq!(item["project_id"], project.as_str());

        let got = json(app.get(&format!("/api/v1/knowledge/{id}")).await).await;
        assert_eq!(got["content"], item["content"]);
        let list = json(app.get("/api/v1/knowledge").await).await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["preview"], item["content"]);
        assert_eq!(list["items"][0]["content_bytes"], item["content"].as_str().unwrap().len());
        assert!(list["items"][0].get("content").is_none(), "lists leave the content out");
        let other = uuid::Uuid::now_v7();
        assert_eq!(json(app.get(&format!("/api/v1/knowledge?project_id={other}")).await).await["total"], 0);

        let r = app.req(Method::PATCH, &format!("/api/v1/knowledge/{id}"))
            .json(&json!({"title": "Payments DB runbook", "source": null})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let updated = json(r).await;
        assert_eq!((updated["title"].as_str(), updated["source"].is_null()), (Some("Payments DB runbook"), true));
        assert_eq!(updated["content"], item["content"], "absent fields stay");

        // Another organization sees nothing of it; a viewer reads but does not write.
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let r = app.req_as(&stranger, method, &format!("/api/v1/knowledge/{id}")).json(&json!({})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        assert_eq!(json(app.req_as(&stranger, Method::GET, "/api/v1/knowledge").send().await.unwrap()).await["total"], 0);
        let viewer = app.key("default", Role::Viewer).await;
        assert_eq!(app.req_as(&viewer, Method::GET, &format!("/api/v1/knowledge/{id}")).send().await.unwrap().status(), 200);
        let r = app.req_as(&viewer, Method::POST, "/api/v1/knowledge").json(&json!({"title": "t", "content": "c"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        // Bad input is a 422 naming the field.
        for (body, field) in [
            (json!({"title": " ", "content": "c"}), "title"),
            (json!({"title": "t", "content": "  "}), "content"),
            (json!({"title": "t", "content": "c", "tags": [""]}), "tags"),
            (json!({"title": "t", "content": "c", "project_id": other}), "project_id"),
        ] {
            let v = assert_error(app.post("/api/v1/knowledge", body).await, 422, "VALIDATION_ERROR").await;
            assert_eq!(v["details"]["field"], field, "{v}");
        }
        // 1 MiB of content is taken (the body is larger than the usual limit); a byte more is not.
        let mib = "a".repeat(1024 * 1024);
        let big = create(&app, json!({"title": "big", "content": mib})).await;
        assert_eq!(big["content"].as_str().unwrap().len(), 1024 * 1024);
        let r = app.post("/api/v1/knowledge", json!({"title": "bigger", "content": format!("{mib}b")})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
        // Every word distinct and in four-byte characters: the worst case for a tsvector.
        let words: Vec<String> = (0..65_536u32)
            .map(|i| [0x20000 + (i >> 8), 0x20100 + (i & 0xff), 0x20200].iter().map(|&c| char::from_u32(c).unwrap()).collect())
            .collect();
        let dense = words.join(" ");
        assert!(dense.len() <= 1024 * 1024);
        create(&app, json!({"title": "dense", "content": dense})).await;

        let r = app.req(Method::DELETE, &format!("/api/v1/knowledge/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_error(app.get(&format!("/api/v1/knowledge/{id}")).await, 404, "NOT_FOUND").await;
        // Deleting the project leaves its items without one.
        let kept = create(&app, json!({"title": "kept", "content": "c", "project_id": project})).await;
        let r = app.req(Method::DELETE, &format!("/api/v1/projects/{project}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let kept = json(app.get(&format!("/api/v1/knowledge/{}", kept["id"].as_str().unwrap())).await).await;
        assert!(kept["project_id"].is_null(), "{kept}");
    }

    async fn search_ranks_the_best_match_first(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        create(&app, json!({"title": "Quarterly planning", "content": "Budget notes. The database is mentioned once.", "tags": ["finance"]})).await;
        let best = create(&app, json!({
            "title": "Payments database failover",
            "content": "When the payments database fails over, restart the payments workers. The database replica takes over.",
            "tags": ["ops", "payments"],
        })).await;
        create(&app, json!({"title": "Lunch menu", "content": "Soup and bread.", "tags": ["ops"]})).await;
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        let r = app.req_as(&stranger, Method::POST, "/api/v1/knowledge")
            .json(&json!({"title": "Payments database", "content": "payments database payments database"})).send().await.unwrap();
        assert_eq!(r.status(), 201);

        let v = json(app.get("/api/v1/knowledge/search?q=payments%20databases").await).await;
        assert_eq!(v["count"], 2, "{v}");
        assert_eq!(v["items"][0]["id"], best["id"], "{v}");
        assert!(v["items"][0]["score"].as_f64().unwrap() > v["items"][1]["score"].as_f64().unwrap());
        assert!(v["items"][0]["snippet"].as_str().unwrap().contains("**"), "{v}");
        assert_eq!(v["mode"], "full_text");
        assert!(v["note"].as_str().unwrap().contains("embedding"));

        // Tags narrow the results to the items carrying every one of them.
        let v = json(app.get("/api/v1/knowledge/search?q=database&tags=finance").await).await;
        assert_eq!(v["count"], 1);
        assert_eq!(v["items"][0]["title"], "Quarterly planning");
        let v = json(app.get("/api/v1/knowledge/search?q=database&tags=ops,payments&limit=5").await).await;
        assert_eq!(v["items"][0]["id"], best["id"]);
        assert_eq!(v["count"], 1);

        // An update is searched by its new words at once; a deleted item is gone.
        let id = best["id"].as_str().unwrap();
        let r = app.req(Method::PUT, &format!("/api/v1/knowledge/{id}"))
            .json(&json!({"content": "Rotate the ledger credentials."})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(app.get("/api/v1/knowledge/search?q=ledger").await).await["count"], 1);
        let r = app.req(Method::DELETE, &format!("/api/v1/knowledge/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(app.get("/api/v1/knowledge/search?q=ledger").await).await["count"], 0);

        // Whatever the query text holds, it is words or a 422, never a server error.
        for q in ["NEAR(a b)", "a*", "col:umn", "^x", "a AND", "((a", "'; DROP TABLE x; --", "a | b & !c", "x\u{0}y"] {
            let r = app.get(&format!("/api/v1/knowledge/search?q={}", encode(q))).await;
            assert_eq!(r.status(), 200, "{q}");
        }
        for q in ["", "   ", "\"*:^()", "\"", "((("] {
            let r = app.get(&format!("/api/v1/knowledge/search?q={}", encode(q))).await;
            assert_error(r, 422, "VALIDATION_ERROR").await;
        }
        let r = app.get("/api/v1/knowledge/search?q=x&limit=101").await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
    }

    async fn a_claim_brings_the_knowledge_and_resources_its_context_names(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let envs = json(app.get("/api/v1/environments").await).await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let queue = app.id_of(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "kq"})).await;
        let agent = app.id_of("/api/v1/agents", json!({"name": "oncall", "system_prompt": "You are on call."})).await;
        let runbook = create(&app, json!({"title": "Payments failover", "content": "Fail over payments-db with `pgctl promote`.", "source": "wiki"})).await;
        let lunch = create(&app, json!({"title": "Lunch menu", "content": "Soup."})).await;
        let archive = create(&app, json!({"title": "Old archive", "content": "z".repeat(40_000)})).await;
        let r = app.post("/api/v1/graph/nodes", json!({"nodes": [
            {"external_id": "db", "labels": ["Database"], "integration": "catalog", "properties": {"name": "payments-db", "engine": "postgres"}},
            {"external_id": "api", "labels": ["Service"], "integration": "catalog", "properties": {"name": "payments-api"}},
        ]})).await;
        let nodes = json(r).await;
        let db = nodes["nodes"][0]["id"].as_str().unwrap().to_string();
        let r = app.post("/api/v1/graph/relationships", json!({"relationships": [
            {"type": "DEPENDS_ON", "from": {"integration": "catalog", "external_id": "api"}, "to": db}]})).await;
        assert_eq!(r.status(), 200);
        // The organization's layer names the lunch menu and the archive; the agent's, the runbook and the database.
        let r = app.req(Method::PUT, "/api/v1/context/organization/default")
            .json(&json!({"knowledge_uuids": [lunch["id"], archive["id"]]})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = app.req(Method::PUT, &format!("/api/v1/context/agent/{agent}"))
            .json(&json!({"knowledge_uuids": [runbook["id"]], "resource_ids": [db]})).send().await.unwrap();
        assert_eq!(r.status(), 200);

        let key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &key, &queue, "kw").await;
        let run = |prompt: &'static str| {
            let app = &app;
            let (agent, queue) = (agent.clone(), queue.clone());
            async move {
                let r = app.post(&format!("/api/v1/agents/{agent}/execute"), json!({"prompt": prompt, "worker_queue_id": queue})).await;
                assert_eq!(r.status(), 201);
            }
        };
        run("How do I fail over the payments database?").await;
        let claim = w.claim(5).await;
        let system = claim["system_prompt"].as_str().unwrap().to_string();
        assert!(system.starts_with("You are on call."), "{system}");
        let (pay, soup) = (system.find("### Payments failover").expect(&system), system.find("### Lunch menu").expect(&system));
        assert!(pay < soup, "the most relevant first: {system}");
        assert!(system.contains("Source: wiki") && system.contains("pgctl promote"));
        assert!(system.contains(&format!("- Old archive ({})", archive["id"].as_str().unwrap())), "too long: listed by title");
        assert!(system.contains("Database \"payments-db\" [catalog:db] engine=\"postgres\"; <-[DEPENDS_ON]- Service \"payments-api\""), "{system}");
        assert_eq!(w.complete(&claim, "ok").await.status(), 200);

        // The next claim sees the context as it is now.
        let r = app.req(Method::PUT, &format!("/api/v1/context/agent/{agent}"))
            .json(&json!({"knowledge_uuids": [], "resource_ids": []})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        run("Anything?").await;
        let claim = w.claim(5).await;
        let system = claim["system_prompt"].as_str().unwrap();
        assert!(!system.contains("Payments failover") && !system.contains("## Resources"), "{system}");
        assert!(system.contains("### Lunch menu"), "{system}");
    }

    async fn the_knowledge_skill_reads_only_for_a_live_run_that_has_it(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let envs = json(app.get("/api/v1/environments").await).await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let queue = app.id_of(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "tq"})).await;
        let with = app.id_of("/api/v1/skills", json!({"name": "know", "type": "knowledge", "configuration": {"tags": ["ops"], "max_results": 1}})).await;
        let search_only = app.id_of("/api/v1/skills", json!({"name": "search-only", "type": "knowledge", "configuration": {"enable_graph_query": false}})).await;
        let skilled = app.id_of("/api/v1/agents", json!({"name": "skilled", "skill_ids": [with]})).await;
        let limited = app.id_of("/api/v1/agents", json!({"name": "limited", "skill_ids": [search_only]})).await;
        let plain = app.id_of("/api/v1/agents", json!({"name": "plain"})).await;
        create(&app, json!({"title": "Failover ops", "content": "failover steps", "tags": ["ops"]})).await;
        create(&app, json!({"title": "Failover ops two", "content": "failover again", "tags": ["ops"]})).await;
        create(&app, json!({"title": "Failover private", "content": "failover secrets", "tags": ["hr"]})).await;
        let key = app.key("default", Role::Worker).await;
        let w = TestWorker::start(&app.url, &key, &queue, "tw").await;
        let mut claims = std::collections::HashMap::new();
        for agent in [&skilled, &limited, &plain] {
            let r = app.post(&format!("/api/v1/agents/{agent}/execute"), json!({"prompt": "p", "worker_queue_id": queue})).await;
            assert_eq!(r.status(), 201);
            let claim = w.claim(5).await;
            claims.insert(claim["execution"]["entity_id"].as_str().unwrap().to_string(), claim);
        }
        let exec = |agent: &str| claims[agent]["execution"]["id"].as_str().unwrap().to_string();
        let tool = |id: &str, what: &str, body: Value| {
            w.post(&format!("/api/v1/executions/{id}/{what}")).json(&body).send()
        };
        // The skill's tags and max_results bound the search; the graph answers Cypher.
        let v = json(tool(&exec(&skilled), "knowledge/search", json!({"query": "failover"})).await.unwrap()).await;
        assert_eq!(v["count"], 1, "{v}");
        assert!(v["items"][0]["title"].as_str().unwrap().starts_with("Failover ops"));
        assert_eq!(v["items"][0]["excerpt"].as_str().unwrap().split(' ').next(), Some("failover"));
        let v = json(tool(&exec(&skilled), "graph/query", json!({"query": "MATCH (a:Agent) RETURN count(*) AS n"})).await.unwrap()).await;
        assert_eq!(v["results"][0]["n"], 3);
        // Without the skill, or with the tool's flag off: 403.
        let r = tool(&exec(&plain), "knowledge/search", json!({"query": "failover"})).await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = tool(&exec(&limited), "graph/query", json!({"query": "MATCH (n) RETURN n"})).await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = tool(&exec(&limited), "knowledge/search", json!({"query": "failover"})).await.unwrap();
        assert_eq!(r.status(), 200);
        // A viewer may not act for a run; another organization does not see it; an ended run is closed.
        let viewer = app.key("default", Role::Viewer).await;
        let r = app.req_as(&viewer, Method::POST, &format!("/api/v1/executions/{}/knowledge/search", exec(&skilled)))
            .json(&json!({"query": "x"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        let r = app.req_as(&stranger, Method::POST, &format!("/api/v1/executions/{}/graph/query", exec(&skilled)))
            .json(&json!({"query": "MATCH (n) RETURN n"})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        assert_eq!(w.complete(&claims[&skilled], "ok").await.status(), 200);
        let r = tool(&exec(&skilled), "knowledge/search", json!({"query": "failover"})).await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
    }
}
