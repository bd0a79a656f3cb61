//! Workflow runs started by a live execution's workflow_executor tool (`POST
//! /executions/{id}/workflow-runs` and the await beside it), on both backends: who may ask,
//! whose run it is, the run's id as a retry key, the link to the execution, and bad input.

use crate::common::worker::TestWorker;
use crate::common::{TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

both_backends! {
    async fn a_tool_starts_workflows_for_the_run_its_worker_holds(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let envs = json(app.get("/api/v1/environments").await).await;
        let env = envs["items"][0]["id"].as_str().unwrap().to_string();
        let queue = id(&json(app.post(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "tool-runs"})).await).await);
        // The agent's skills: one that lets the model name any workflow, one with an inline
        // definition.
        let inline_def = json!({"name": "tmp", "steps": [{"id": "a", "type": "command", "command": "echo a"}]});
        let mut skill_ids = Vec::new();
        for skill in [
            json!({"name": "chooser", "type": "workflow_executor"}),
            json!({"name": "inline", "type": "workflow_executor", "configuration": {"workflow_definition": inline_def.to_string()}}),
        ] {
            skill_ids.push(id(&json(app.post("/api/v1/skills", skill).await).await));
        }
        let agent = id(&json(app.post("/api/v1/agents", json!({"name": "caller", "skill_ids": skill_ids})).await).await);
        let member = app.key("default", Role::Member).await;
        let execute = |key: String, queue: String| {
            let body = json!({"prompt": "use the workflow", "worker_queue_id": queue});
            let path = format!("/api/v1/agents/{agent}/execute");
            let req = app.req_as(&key, Method::POST, &path).json(&body);
            async move { json(req.send().await.unwrap()).await["execution_id"].as_str().unwrap().to_string() }
        };
        let execution = execute(member.clone(), queue.clone()).await;
        let worker_key = app.key("default", Role::Worker).await;
        let worker = TestWorker::start(&app.url, &worker_key, &queue, "host").await;
        let claim = worker.claim(20).await;
        assert_eq!(claim["execution"]["id"], execution.as_str());
        let wf = json(app.post("/api/v1/workflows", json!({"name": "greet",
            "steps": [{"id": "hi", "type": "command", "command": "echo hi"}]})).await).await;

        let path = format!("/api/v1/executions/{execution}/workflow-runs");
        let send = |key: &str, body: Value| app.req_as(key, Method::POST, &path).json(&body).send();
        let run_id = uuid::Uuid::now_v7();
        let r = send(&worker_key, json!({"id": run_id, "workflow": "greet", "inputs": {}})).await.unwrap();
        assert_eq!(r.status(), 201);
        let run = json(r).await;
        assert_eq!((run["id"].as_str(), run["parent_execution_id"].as_str()), (Some(run_id.to_string().as_str()), Some(execution.as_str())));
        assert_eq!(run["workflow_id"], wf["id"]);
        // The run acts for the key that started the execution, not for the worker's.
        let started = json(app.get(&format!("/api/v1/executions/{execution}")).await).await;
        assert_eq!(run["created_by"], started["user_metadata"]["key_id"]);
        // Its working steps run on the execution's queue.
        assert_eq!(run["worker_queue_id"], queue.as_str());
        // The same id again is the same run (a retried request), not a second one.
        let r = send(&worker_key, json!({"id": run_id, "workflow": "greet"})).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["id"], run["id"]);
        let by_id = json(send(&worker_key, json!({"workflow": wf["id"]})).await.unwrap()).await;
        assert_eq!(by_id["workflow_name"], "greet");
        let listed = json(app.get(&format!("/api/v1/workflow-runs?execution_id={execution}")).await).await;
        assert_eq!(listed["total"], 2, "{listed}");
        assert_eq!(json(app.get("/api/v1/workflow-runs").await).await["total"], 2);

        // The await answers at once with wait=0; a run the execution did not start is not its.
        let await_path = |run: &str, wait: &str| format!("/api/v1/executions/{execution}/workflow-runs/{run}?wait={wait}");
        let get = |key: &str, p: String| app.req_as(key, Method::GET, &p).send();
        let r = get(&worker_key, await_path(&run_id.to_string(), "0")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["id"], run["id"]);
        let other = json(app.post(&format!("/api/v1/workflows/{}/start", wf["id"].as_str().unwrap()), json!({"worker_queue_id": queue})).await).await;
        assert_error(get(&worker_key, await_path(other["id"].as_str().unwrap(), "0")).await.unwrap(), 404, "NOT_FOUND").await;
        for wait in ["-1", "61", "NaN", "x"] {
            let r = get(&worker_key, await_path(&run_id.to_string(), wait)).await.unwrap();
            assert_error(r, 422, "VALIDATION_ERROR").await;
        }
        // Another run's id is not taken over.
        let r = send(&worker_key, json!({"id": other["id"], "workflow": "greet"})).await.unwrap();
        assert_error(r, 409, "CONFLICT").await;

        // Bad input: one target exactly, known workflows, definitions that are workflows.
        for (body, field) in [
            (json!({"workflow": "greet", "definition": {"steps": []}}), "workflow"),
            (json!({}), "workflow"),
            (json!({"definition": []}), "definition"),
            (json!({"workflow": "greet", "inputs": [1]}), "inputs"),
        ] {
            let err = assert_error(send(&worker_key, body.clone()).await.unwrap(), 422, "VALIDATION_ERROR").await;
            assert!(err.to_string().contains(field), "{body}: {err}");
        }
        assert_error(send(&worker_key, json!({"workflow": "nope"})).await.unwrap(), 404, "NOT_FOUND").await;
        assert_error(send(&worker_key, json!({"workflow": uuid::Uuid::now_v7()})).await.unwrap(), 404, "NOT_FOUND").await;
        let inline = json!({ "definition": inline_def });
        let first = json(send(&worker_key, inline.clone()).await.unwrap()).await;
        let second = json(send(&worker_key, inline.clone()).await.unwrap()).await;
        assert_eq!(first["workflow_id"], second["workflow_id"]);
        let stored_as = first["workflow_name"].as_str().unwrap().to_string();
        assert!(stored_as.starts_with("tmp (inline "), "{first}");
        // Only what a skill of the agent names: not another definition.
        let other_def = json!({"definition": {"name": "tmp", "steps": [{"id": "a", "type": "command", "command": "rm -rf ~"}]}});
        let err = assert_error(send(&worker_key, other_def).await.unwrap(), 403, "FORBIDDEN").await;
        assert!(err.to_string().contains("names this workflow"), "{err}");
        // A workflow edited under the inline one's name is not run in its place.
        let r = app.req(Method::PATCH, &format!("/api/v1/workflows/{}", first["workflow_id"].as_str().unwrap()))
            .json(&json!({"steps": [{"id": "a", "type": "command", "command": "echo changed"}]})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        assert_error(send(&worker_key, inline).await.unwrap(), 409, "CONFLICT").await;

        // Another member may ask, but acts as itself, not as the execution's author.
        let other_member = app.key("default", Role::Member).await;
        let mine = json(send(&other_member, json!({"workflow": "greet"})).await.unwrap()).await;
        assert!(mine["created_by"].is_string() && mine["created_by"] != started["user_metadata"]["key_id"], "{mine}");
        // An agent without a workflow_executor skill starts none.
        let plain = id(&json(app.post("/api/v1/agents", json!({"name": "plain"})).await).await);
        let body = json!({"prompt": "x", "worker_queue_id": queue});
        let plain_run = json(app.post(&format!("/api/v1/agents/{plain}/execute"), body).await).await;
        let path2 = format!("/api/v1/executions/{}/workflow-runs", plain_run["execution_id"].as_str().unwrap());
        let r = app.req(Method::POST, &path2).json(&json!({"workflow": "greet"})).send().await.unwrap();
        let err = assert_error(r, 403, "FORBIDDEN").await;
        assert!(err.to_string().contains("no workflow_executor skill"), "{err}");

        // Who may ask: not a viewer, not a worker key whose workers do not hold the run, not
        // another organization.
        let viewer = app.key("default", Role::Viewer).await;
        assert_error(send(&viewer, json!({"workflow": "greet"})).await.unwrap(), 403, "FORBIDDEN").await;
        let other_worker = app.key("default", Role::Worker).await;
        assert_error(send(&other_worker, json!({"workflow": "greet"})).await.unwrap(), 403, "FORBIDDEN").await;
        assert_error(get(&other_worker, await_path(&run_id.to_string(), "0")).await.unwrap(), 403, "FORBIDDEN").await;
        let stranger = app.org_with_key("tool-runs-stranger", Role::Worker).await;
        assert_error(send(&stranger, json!({"workflow": "greet"})).await.unwrap(), 404, "NOT_FOUND").await;

        // A run that ended starts nothing more.
        assert_eq!(worker.complete(&claim, "done").await.status(), 200);
        assert_error(send(&worker_key, json!({"workflow": "greet"})).await.unwrap(), 409, "CONFLICT").await;

        // A revoked author: the tool cannot act for it any more. (Its own queue: the runs
        // above left steps on the first.)
        let queue2 = id(&json(app.post(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "tool-runs-2"})).await).await);
        let second = execute(member.clone(), queue2.clone()).await;
        let worker = TestWorker::start(&app.url, &worker_key, &queue2, "host-2").await;
        let claim = worker.claim(20).await;
        assert_eq!(claim["execution"]["id"], second.as_str());
        let keys = json(app.get("/api/v1/api-keys?limit=100").await).await;
        let started = json(app.get(&format!("/api/v1/executions/{second}")).await).await;
        let author = started["user_metadata"]["key_id"].as_str().unwrap().to_string();
        assert!(keys["items"].as_array().unwrap().iter().any(|k| k["id"] == author.as_str()));
        let r = app.req(Method::DELETE, &format!("/api/v1/api-keys/{author}")).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let path = format!("/api/v1/executions/{second}/workflow-runs");
        let r = app.req_as(&worker_key, Method::POST, &path).json(&json!({"workflow": "greet"})).send().await.unwrap();
        let err = assert_error(r, 403, "FORBIDDEN").await;
        assert!(err.to_string().contains("revoked"), "{err}");
    }
}
