//! Knowledge and the context graph in real runs: an agent whose context names a knowledge
//! item and a graph node sees them in the model request, and an agent with the knowledge
//! skill searches knowledge and asks the graph who depends on what, on a real worker.

use reqwest::Method;
use serde_json::json;

use crate::worker::{fake_llm, one_agent, spawn_worker, start_server};

on_both_backends!(agents_know_what_their_context_names_and_query_the_graph);

async fn agents_know_what_their_context_names_and_query_the_graph(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "oncall", json!({"name": "kq"})).await;
    let runbook = api
        .post(
            "/api/v1/knowledge",
            json!({"title": "Payments failover", "content": "Promote the replica with `pgctl promote`.", "tags": ["ops"]}),
        )
        .await;
    api.post("/api/v1/graph/nodes", json!({"nodes": [
        {"external_id": "db", "labels": ["Database"], "integration": "catalog", "properties": {"name": "payments-db"}},
        {"external_id": "api", "labels": ["Service"], "integration": "catalog", "properties": {"name": "payments-api"}},
        {"external_id": "billing", "labels": ["Service"], "integration": "catalog", "properties": {"name": "billing"}},
        {"external_id": "pay-team", "labels": ["Team"], "integration": "directory", "properties": {"name": "payments-team"}},
        {"external_id": "bill-team", "labels": ["Team"], "integration": "directory", "properties": {"name": "billing-team"}},
    ]}))
    .await;
    let end = |i: &str, e: &str| json!({"integration": i, "external_id": e});
    let rels = api
        .post(
            "/api/v1/graph/relationships",
            json!({"relationships": [
                {"type": "DEPENDS_ON", "from": end("catalog", "api"), "to": end("catalog", "db")},
                {"type": "DEPENDS_ON", "from": end("catalog", "billing"), "to": end("catalog", "db")},
                {"type": "OWNS", "from": end("directory", "pay-team"), "to": end("catalog", "api")},
                {"type": "OWNS", "from": end("directory", "bill-team"), "to": end("catalog", "billing")},
            ]}),
        )
        .await;
    let db = rels["relationships"][0]["to"].as_str().unwrap().to_string();
    api.call(
        Method::PUT,
        &format!("/api/v1/context/agent/{agent}"),
        Some(json!({"knowledge_uuids": [runbook["id"]], "resource_ids": [db]})),
    )
    .await;
    let skill = api
        .post(
            "/api/v1/skills",
            json!({"name": "know", "type": "knowledge", "configuration": {"tags": ["ops"]}}),
        )
        .await;
    api.call(
        Method::PATCH,
        &format!("/api/v1/agents/{agent}"),
        Some(json!({"skill_ids": [skill["id"]]})),
    )
    .await;
    let _worker = spawn_worker(&queue, &api.base, &key);

    // The context's knowledge and resources are in the model request's instructions.
    let done = api.execute(&agent, &queue, "recite your instructions").await;
    let said = done["response"].as_str().unwrap_or_default();
    assert!(
        said.contains("### Payments failover") && said.contains("pgctl promote"),
        "{done}"
    );
    assert!(
        said.contains("Database \"payments-db\" [catalog:db]") && said.contains("<-[DEPENDS_ON]- Service"),
        "{done}"
    );

    // The skill's tools, on the worker.
    let cypher = "MATCH (d:Database {name: 'payments-db'})<-[:DEPENDS_ON]-(s:Service)<-[:OWNS]-(t:Team) \
                  RETURN s.name AS service, t.name AS owner ORDER BY service";
    let done = api
        .execute(
            &agent,
            &queue,
            &format!("call: query_graph {}", json!({"cypher": cypher})),
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["response"],
        format!(
            "The tool said: {}",
            json!([{"service": "billing", "owner": "billing-team"}, {"service": "payments-api", "owner": "payments-team"}])
        )
    );
    let done = api
        .execute(
            &agent,
            &queue,
            "call: search_knowledge {\"query\": \"payments failover steps\"}",
        )
        .await;
    let said = done["response"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("The tool said: 1. Payments failover") && said.contains("pgctl promote"),
        "{done}"
    );
    // A write is refused with the clause named, and the run goes on.
    let done = api
        .execute(
            &agent,
            &queue,
            "call: query_graph {\"cypher\": \"MATCH (n) DETACH DELETE n\"}",
        )
        .await;
    assert!(
        done["response"].as_str().unwrap_or_default().contains("DETACH DELETE"),
        "{done}"
    );
    let count = api
        .post(
            "/api/v1/graph/query",
            json!({"query": "MATCH (n:Service) RETURN count(*) AS n"}),
        )
        .await;
    assert_eq!(count["results"][0]["n"], 2);
    // The tools meet the policies like any other: one refusing query_graph stops it.
    let rego = "package kubiya.tools.no_graph\n\ndeny contains \"no graph here\" if {\n\tinput.tool.name == \"query_graph\"\n}\n";
    api.attach_policy("no-graph", rego).await;
    let done = api
        .execute(
            &agent,
            &queue,
            &format!("call: query_graph {}", json!({"cypher": cypher})),
        )
        .await;
    assert!(
        done["response"]
            .as_str()
            .unwrap_or_default()
            .contains("blocked by policy: no graph here"),
        "{done}"
    );
}
