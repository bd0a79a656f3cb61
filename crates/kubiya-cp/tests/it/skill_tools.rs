//! Every skill type the worker runs, end to end: the fake model calls each tool by name on a
//! real worker, and the answers, the files written and the events (`tool_started`,
//! `tool_completed`, `file_generated`, `diagram`, `policy_decision`) are checked.

use reqwest::Method;
use serde_json::{Value, json};

use crate::worker::{Api, fake_llm, one_agent, spawn_worker, start_server};

on_both_backends!(every_skill_type_gives_its_tools_to_a_real_worker);

/// The events of execution `id`.
async fn events(api: &Api, id: &str) -> Vec<Value> {
    let page = api.get(&format!("/api/v1/executions/{id}/events?limit=500")).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Runs `call: <tool> <args>` and answers the execution once it ended, checking that the
/// call was reported as started and completed.
async fn call(api: &Api, agent: &str, queue: &str, tool: &str, args: Value) -> (Value, Vec<Value>) {
    let done = api.execute(agent, queue, &format!("call: {tool} {args}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let events = events(api, done["id"].as_str().unwrap()).await;
    for t in ["tool_started", "tool_completed"] {
        assert!(
            events.iter().any(|e| e["type"] == t && e["data"]["tool_name"] == tool),
            "{t} of {tool} missing: {events:?}"
        );
    }
    (done, events)
}

fn answer(done: &Value) -> &str {
    done["response"].as_str().unwrap_or_default()
}

async fn every_skill_type_gives_its_tools_to_a_real_worker(postgres: bool) {
    let llm_url = fake_llm().await;
    let (_server, api, _data) = start_server(postgres).await;
    let (agent, queue, key) = one_agent(&api, &llm_url, "toolsmith", json!({"name": "tools"})).await;
    // Outside /tmp: tools' processes get a private one.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(
        dir.path().join("greeter.py"),
        "class Greeter:\n    def __init__(self, greeting):\n        self.greeting = greeting\n    \
         def run(self, name):\n        return f'{self.greeting}, {name}!'\n",
    )
    .unwrap();
    let generated = dir.path().join("generated");
    let skills = [
        json!({"name": "py", "type": "python"}),
        json!({"name": "writer", "type": "file_generation", "configuration": {"output_directory": generated}}),
        json!({"name": "charts", "type": "data_visualization", "configuration": {"enable_pie_chart": false}}),
        json!({"name": "pause", "type": "sleep", "configuration": {"max_sleep_seconds": 60}}),
        json!({"name": "greet", "type": "custom", "description": "Greets someone by name", "configuration": {
            "custom_class": "greeter:Greeter",
            "custom_config": {"init": {"greeting": "Hello"}, "python_path": [dir.path()],
                "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
        }}),
        json!({"name": "broken", "type": "custom", "configuration": {"custom_class": "not_installed:Tool"}}),
        json!({"name": "flows", "type": "workflow_executor", "configuration": {"workflow": "double"}}),
        json!({"name": "boxes", "type": "docker"}),
        json!({"name": "inline", "type": "workflow_executor", "configuration": {"workflow_definition":
            r#"{"name": "hello", "steps": [{"id": "hello", "type": "command", "command": "echo inline"}]}"#}}),
    ];
    let mut ids = Vec::new();
    for s in skills {
        ids.push(api.post("/api/v1/skills", s).await["id"].clone());
    }
    api.call(
        Method::PATCH,
        &format!("/api/v1/agents/{agent}"),
        Some(json!({ "skill_ids": ids })),
    )
    .await;
    let _worker = spawn_worker(&queue, &api.base, &key);

    // python: the code runs; a blocked import is refused, named, before anything runs.
    let (done, _) = call(&api, &agent, &queue, "run_python", json!({"code": "print(6 * 7)"})).await;
    assert_eq!(answer(&done), "The tool said: 42\n");
    let (done, _) = call(
        &api,
        &agent,
        &queue,
        "run_python",
        json!({"code": "def f():\n    import subprocess\nprint('ran')"}),
    )
    .await;
    assert!(
        answer(&done).contains("import of 'subprocess' is refused: 'subprocess' is in blocked_imports"),
        "{done}"
    );
    assert!(!answer(&done).contains("ran"), "{done}");

    // file_generation: each kind is written and listed in a file_generated event.
    let rows = json!([["name", "team"], ["ada", "core"]]);
    let (done, events) = call(
        &api,
        &agent,
        &queue,
        "generate_csv",
        json!({"filename": "people.csv", "rows": rows}),
    )
    .await;
    assert!(
        answer(&done).contains("wrote people.csv (21 bytes, text/csv)"),
        "{done}"
    );
    assert_eq!(
        std::fs::read_to_string(generated.join("people.csv")).unwrap(),
        "name,team\r\nada,core\r\n"
    );
    let file = events
        .iter()
        .find(|e| e["type"] == "file_generated")
        .expect("a file_generated event");
    assert_eq!(
        (
            &file["data"]["files"][0]["name"],
            &file["data"]["files"][0]["size"],
            &file["data"]["files"][0]["media_type"]
        ),
        (&json!("people.csv"), &json!(21), &json!("text/csv")),
        "{file}"
    );
    call(
        &api,
        &agent,
        &queue,
        "generate_pdf",
        json!({"filename": "report.pdf", "title": "Report", "content": "All good."}),
    )
    .await;
    assert!(
        std::fs::read(generated.join("report.pdf"))
            .unwrap()
            .starts_with(b"%PDF-")
    );
    call(
        &api,
        &agent,
        &queue,
        "generate_json",
        json!({"filename": "data.json", "data": {"ok": true}}),
    )
    .await;
    call(
        &api,
        &agent,
        &queue,
        "generate_text",
        json!({"filename": "notes.txt", "content": "hi"}),
    )
    .await;
    assert_eq!(std::fs::read_to_string(generated.join("notes.txt")).unwrap(), "hi");
    let (done, _) = call(
        &api,
        &agent,
        &queue,
        "generate_text",
        json!({"filename": "../escape.txt", "content": "x"}),
    )
    .await;
    assert!(answer(&done).contains("leaves the base directory"), "{done}");
    assert!(!dir.path().join("escape.txt").exists());

    // data_visualization: the source reaches the run's events; a disabled kind is refused.
    let source = "flowchart LR\n  build --> deploy";
    let (done, events) = call(&api, &agent, &queue, "create_diagram", json!({ "source": source })).await;
    assert_eq!(
        answer(&done),
        "The tool said: The flowchart diagram was shown to the user."
    );
    let diagram = events.iter().find(|e| e["type"] == "diagram").expect("a diagram event");
    assert_eq!(
        (&diagram["data"]["source"], &diagram["data"]["diagram_type"]),
        (&json!(source), &json!("flowchart"))
    );
    let (done, events) = call(
        &api,
        &agent,
        &queue,
        "create_diagram",
        json!({"source": "pie\n \"a\" : 1"}),
    )
    .await;
    assert!(answer(&done).contains("pie diagrams are not enabled"), "{done}");
    assert!(!events.iter().any(|e| e["type"] == "diagram"));

    // custom: the class runs with the arguments; one that cannot be imported is named.
    let (done, _) = call(&api, &agent, &queue, "greet", json!({"name": "Ada"})).await;
    assert_eq!(answer(&done), "The tool said: Hello, Ada!\n");
    let (done, _) = call(&api, &agent, &queue, "broken", json!({})).await;
    assert!(
        answer(&done).contains("cannot load custom_class 'not_installed:Tool': ModuleNotFoundError"),
        "{done}"
    );

    // sleep: a short wait answers; cancelling a long one ends the run at once.
    let (done, _) = call(&api, &agent, &queue, "sleep", json!({"seconds": 0.1})).await;
    assert_eq!(answer(&done), "The tool said: slept 0.1 s");
    api.cancel_during_tool(&agent, &queue, "call: sleep {\"seconds\": 50}")
        .await;

    // workflow_executor: the skill's workflow runs on the execution's queue, linked to it, and
    // the tool answers with each step's output; an inline definition is stored once and reused.
    api.post(
        "/api/v1/workflows",
        json!({"name": "double", "inputs_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            "steps": [{"id": "calc", "type": "command", "command": "echo {{ inputs.n * 2 }}"}]}),
    )
    .await;
    let (done, _) = call(&api, &agent, &queue, "run_workflow", json!({"inputs": {"n": 21}})).await;
    let said: Value = serde_json::from_str(answer(&done).trim_start_matches("The tool said: ")).unwrap();
    assert_eq!(
        (&said["status"], &said["outputs"]),
        (&json!("completed"), &json!({"calc": 42})),
        "{done}"
    );
    let runs = api
        .get(&format!(
            "/api/v1/workflow-runs?execution_id={}",
            done["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(runs["total"], 1, "{runs}");
    assert_eq!(runs["items"][0]["parent_execution_id"], done["id"]);
    assert_eq!(runs["items"][0]["id"], said["workflow_run_id"]);
    let (done, _) = call(&api, &agent, &queue, "run_workflow", json!({"inputs": {"n": "x"}})).await;
    assert!(
        answer(&done).contains("the workflow could not be started") && answer(&done).contains("inputs.n"),
        "{done}"
    );
    for _ in 0..2 {
        let (done, _) = call(&api, &agent, &queue, "inline_run_workflow", json!({})).await;
        assert!(answer(&done).contains(r#""outputs":{"hello":"inline"}"#), "{done}");
    }
    let workflows = api.get("/api/v1/workflows").await;
    let inline: Vec<&Value> = workflows["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"].as_str().unwrap().starts_with("hello (inline "))
        .collect();
    assert_eq!(inline.len(), 1, "{workflows}");

    // docker: the engine's containers where the worker's host has one; without, the call
    // says so, and the worker's registration told which.
    let (done, _) = call(&api, &agent, &queue, "docker_list_containers", json!({"all": true})).await;
    let said = answer(&done).trim_start_matches("The tool said: ");
    let workers = api.get(&format!("/api/v1/worker-queues/{queue}/workers")).await;
    let items = workers["items"]
        .as_array()
        .or(workers.as_array())
        .cloned()
        .unwrap_or_default();
    let docker = items[0]["capabilities"]["docker"]
        .as_bool()
        .expect("the worker says whether Docker is there");
    if docker {
        assert!(serde_json::from_str::<Vec<Value>>(said).is_ok(), "{said}");
    } else {
        assert!(said.contains("Docker engine"), "{said}");
        eprintln!("docker tools checked without an engine: none on this host");
    }

    // Every tool meets the policies first: one refusing run_python stops it before it runs.
    let rego = "package kubiya.tools.no_python\n\ndeny contains \"no python here\" if {\n\tinput.tool.name == \"run_python\"\n}\n";
    api.attach_policy("no-python", rego).await;
    let marker = dir.path().join("python-ran");
    let code = format!("open('{}', 'w').write('x')", marker.display());
    let (done, events) = call(&api, &agent, &queue, "run_python", json!({ "code": code })).await;
    assert!(answer(&done).contains("blocked by policy: no python here"), "{done}");
    assert!(events.iter().any(|e| e["type"] == "policy_decision"));
    assert!(!marker.exists(), "the refused code ran");
}
