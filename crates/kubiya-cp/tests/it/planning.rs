//! Task planning on the real `serve` and `worker` processes with the fake model: a task is
//! planned over the organization's agents, the plan is executed as a workflow, and the
//! workflow completes on a real worker with each step given its dependency's output.

use std::time::Duration;

use serde_json::{Value, json};

use crate::worker::{fake_llm, one_agent, spawn_worker, start_server};
use crate::workflow_runs::run_when;

on_both_backends!(a_plan_runs_as_a_workflow_on_a_real_worker);

/// The fake planner's answer to a prompt: the first agent listed collects, the second one
/// reports what the first collected.
pub fn plan_for(prompt: &Value) -> Value {
    let prompt = prompt.as_str().unwrap_or_default();
    let ids: Vec<&str> = prompt
        .lines()
        .filter_map(|l| l.strip_prefix("- id: "))
        .filter_map(|l| l.split(" | ").next())
        .collect();
    let queue = prompt
        .split("Worker queues:\n- id: ")
        .nth(1)
        .and_then(|l| l.split(" | ").next());
    json!({
        "title": "Collect and report",
        "summary": "One agent collects, the other reports.",
        "complexity": {"story_points": 2, "confidence": "high", "reasoning": "two steps"},
        "steps": [
            {"id": "collect", "title": "Collect", "description": "Collect the numbers", "agent_id": ids.first()},
            {"id": "report", "title": "Report", "description": "Report them", "agent_id": ids.get(1).or(ids.first()),
             "depends_on": ["collect"]}
        ],
        "recommended_execution": {"entity_type": "agent", "entity_id": ids.first(), "worker_queue_id": queue},
        "success_criteria": ["a report"]
    })
}

async fn a_plan_runs_as_a_workflow_on_a_real_worker(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (_collector, queue, key) = one_agent(&api, &llm_url, "collector", json!({"name": "plans"})).await;
    api.post(
        "/api/v1/agents",
        json!({"name": "reporter", "model_id": "fake/collector"}),
    )
    .await;
    // The planner plans with the organization's default model: the fake one.
    let models = api.get("/api/v1/models").await;
    let model = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["value"] == "fake/collector")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/models/{model}"),
        Some(json!({"is_default": true})),
    )
    .await;
    let _worker = spawn_worker(&queue, &api.base, &key);

    let planned = api
        .post(
            "/api/v1/planning/plan",
            json!({"task_description": "Collect the numbers and report them"}),
        )
        .await;
    assert_eq!(planned["planner"], "llm", "{planned}");
    assert_eq!(
        planned["plan"]["recommended_execution"]["worker_queue_id"],
        queue.as_str()
    );
    let id = planned["id"].as_str().unwrap();
    // The recommended queue is used when the request names none.
    let started = api.post(&format!("/api/v1/tasks/plans/{id}/execute"), json!({})).await;
    let run = started["workflow_run_id"].as_str().unwrap();
    let done = run_when(&api, run, Duration::from_secs(30), |r| {
        ["completed", "failed", "cancelled"].contains(&r["status"].as_str().unwrap_or_default())
    })
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let steps = done["steps"].as_array().unwrap();
    let output = |id: &str| {
        steps.iter().find(|s| s["step_id"] == id).unwrap()["output"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(output("collect"), "did Collect after [nothing]");
    assert_eq!(output("report"), "did Report after [did Collect after [nothing]]");
    // The plan shows its run, finished.
    let stored = api.get(&format!("/api/v1/tasks/plans/{id}")).await;
    assert_eq!(stored["runs"][0]["workflow_run_id"], run);
    assert_eq!(stored["runs"][0]["status"], "completed");
}
