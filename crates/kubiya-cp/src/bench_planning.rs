//! The task planning scenario: what `POST /api/v1/tasks/plan` adds over its model call for an
//! organization of 200 agents. The model is a fake OpenAI-compatible provider in this process
//! that answers at once with a valid 3-step plan over agents named in the prompt, so a plan's
//! latency is the server's own work (catalog, ranking, prompt, checks, storing) plus one
//! loopback model call, measured alone against the same fake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::bench_exec::Conn;

/// Agents of the organization.
const AGENTS: usize = 200;
/// Teams of the organization, each with a few of the agents.
const TEAMS: usize = 5;
/// Plans made one after the other, and direct model calls measured the same way.
const SEQUENTIAL: usize = 300;
/// Connections planning side by side in the concurrent part.
const CONCURRENT: usize = 4;

/// What the agents do: their names and descriptions, and the tasks' words.
const DOMAINS: [(&str, &str); 10] = [
    ("dba", "Backs up, restores and tunes PostgreSQL and MySQL databases"),
    (
        "deployer",
        "Deploys services to Kubernetes clusters with Helm and rolls them back",
    ),
    (
        "oncall",
        "Triages alerts from Prometheus and PagerDuty and writes incident notes",
    ),
    ("netops", "Manages DNS records, load balancers and TLS certificates"),
    ("finops", "Reports cloud costs per team and finds idle AWS resources"),
    (
        "secops",
        "Rotates credentials, scans images for CVEs and reviews IAM policies",
    ),
    ("ci", "Fixes failing CI pipelines and flaky tests in GitHub Actions"),
    ("data", "Runs Airflow DAGs, backfills tables and checks data quality"),
    ("support", "Answers customer tickets from Zendesk using the runbooks"),
    ("infra", "Provisions infrastructure with Terraform and reviews plans"),
];

/// Tasks planned, varied by the request number.
const TASKS: [&str; 8] = [
    "Back up the billing database and deploy billing v{n} to the staging cluster",
    "Rotate the database credentials of service {n} and redeploy it",
    "Find why the checkout pipeline run {n} fails and fix the flaky test",
    "Renew the TLS certificate of api{n}.example.com and update the load balancer",
    "Report last month's AWS costs of team {n} and list idle instances",
    "Backfill the orders table for day {n} and check the row counts",
    "Triage alert {n} from Prometheus, page the owner and write the incident note",
    "Apply the Terraform plan for VPC {n} after reviewing it",
];

/// The fake provider's bookkeeping.
#[derive(Clone)]
struct Fake {
    /// Time spent inside the handler per request, µs.
    spent_us: Arc<Mutex<Histogram<u64>>>,
    requests: Arc<AtomicU64>,
    /// The last request's body, replayed for the model-call baseline.
    last: Arc<Mutex<Bytes>>,
}

/// The `- id: <uuid>` lines of the prompt's `Agents:`, `Teams:` and `Worker queues:` lists.
fn listed(prompt: &str) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let (mut agents, mut teams, mut queues) = (Vec::new(), Vec::new(), Vec::new());
    let mut section = "";
    for line in prompt.lines() {
        if let Some(rest) = line.strip_prefix("- id: ") {
            let id = rest.split(" |").next().unwrap_or_default();
            match section {
                "Agents:" => agents.push(id),
                "Teams:" => teams.push(id),
                "Worker queues:" => queues.push(id),
                _ => {}
            }
        } else if line.ends_with(':') {
            section = line;
        }
    }
    (agents, teams, queues)
}

/// A valid plan: 3 steps over the first agents listed, run by the first team on the first queue.
fn plan_for(prompt: &str) -> Value {
    let (agents, teams, queues) = listed(prompt);
    let steps: Vec<Value> = agents
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, agent)| {
            let mut s = json!({"id": format!("s{i}"), "title": format!("Part {i}"),
                "description": format!("Do part {i} of the task"), "agent_id": agent,
                "expected_output": "what was done"});
            if i > 0 {
                s["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            s
        })
        .collect();
    let (kind, lead) = match teams.first() {
        Some(t) => ("team", *t),
        None => ("agent", agents.first().copied().unwrap_or_default()),
    };
    json!({
        "title": "Bench plan", "summary": "Three parts, one after the other.",
        "complexity": {"story_points": 3, "confidence": "high", "reasoning": "three known parts"},
        "steps": steps,
        "recommended_execution": {"entity_type": kind, "entity_id": lead,
            "worker_queue_id": queues.first(), "reasoning": "it has the agents"},
        "risks": ["none known"], "prerequisites": [], "success_criteria": ["every part done"], "questions": []
    })
}

/// The plan as an OpenAI-style stream: a `submit_plan` call in two pieces, then the usage.
fn sse(plan: &Value) -> String {
    let chunk =
        |delta: Value, finish: Value| json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let args = plan.to_string();
    let (a, b) = args.split_at(args.len() / 2);
    let events = [
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "submit_plan", "arguments": a}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        json!({"choices": [], "usage": {"prompt_tokens": 3000, "completion_tokens": 300}}),
    ];
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

async fn chat(State(fake): State<Fake>, body: Bytes) -> Response {
    let t = Instant::now();
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let answer = sse(&plan_for(prompt));
    fake.requests.fetch_add(1, Ordering::Relaxed);
    *fake.last.lock().expect("not poisoned") = body;
    let _ = fake
        .spent_us
        .lock()
        .expect("not poisoned")
        .record(t.elapsed().as_micros().max(1) as u64);
    ([("content-type", "text/event-stream")], answer).into_response()
}

/// The fake provider on a loopback port: its address, bookkeeping and task.
async fn provider() -> anyhow::Result<(SocketAddr, Fake, tokio::task::JoinHandle<()>)> {
    let fake = Fake {
        spent_us: Arc::new(Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?)),
        requests: Arc::default(),
        last: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(fake.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, fake, task))
}

async fn created(conn: &mut Conn, path: &str, body: Value) -> anyhow::Result<String> {
    let v = conn.json("POST", path, Some(&body.to_string()), 201).await?;
    Ok(v["id"].as_str().context("no id")?.to_owned())
}

/// The key in a secret, the fake as the default model, shell skills, 200 agents (a third with
/// a skill), 5 teams and a worker queue.
async fn organization(conn: &mut Conn, llm: SocketAddr) -> anyhow::Result<()> {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let short = &tag[24..];
    let secret = format!("BENCH_PLANNER_KEY_{short}");
    conn.json(
        "POST",
        "/api/v1/secrets",
        Some(&json!({"name": secret, "value": "sk-bench"}).to_string()),
        201,
    )
    .await?;
    let model = json!({"value": format!("bench/planner-{short}"), "label": "Bench planner", "provider": "openai",
        "base_url": format!("http://{llm}/v1"), "api_key_secret": secret, "is_default": true,
        "pricing": {"input_per_1k": 0.003, "output_per_1k": 0.015}});
    created(conn, "/api/v1/models", model).await?;
    let mut skills = Vec::new();
    for (name, what) in [
        ("psql", "runs psql and pg_dump"),
        ("kubectl", "runs kubectl and helm"),
        ("aws", "runs the AWS CLI"),
    ] {
        let body = json!({"name": format!("{name}-{short}"), "type": "shell", "description": what});
        skills.push(created(conn, "/api/v1/skills", body).await?);
    }
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let (domain, what) = DOMAINS[i % DOMAINS.len()];
        let mut body = json!({"name": format!("{domain}-{i:03}-{short}"),
            "description": format!("{what}; agent {i} of the {domain} group")});
        if i % 3 == 0 {
            body["skill_ids"] = json!([skills[i % skills.len()]]);
        }
        agents.push(created(conn, "/api/v1/agents", body).await?);
    }
    for (t, (domain, what)) in DOMAINS.iter().enumerate().take(TEAMS) {
        let members: Vec<&String> = agents.iter().skip(t).step_by(40).collect();
        let body = json!({"name": format!("{domain} team {short}"), "description": what,
            "configuration": {"member_ids": members}});
        created(conn, "/api/v1/teams", body).await?;
    }
    let envs = conn.json("GET", "/api/v1/environments?limit=500", None, 200).await?;
    let env = envs["items"]
        .as_array()
        .and_then(|items| items.iter().find(|e| e["name"] == "default"))
        .and_then(|e| e["id"].as_str())
        .context("no default environment")?
        .to_owned();
    let path = format!("/api/v1/environments/{env}/worker-queues");
    created(conn, &path, json!({"name": format!("planning-{short}")})).await?;
    Ok(())
}

fn task(n: usize) -> String {
    TASKS[n % TASKS.len()].replace("{n}", &n.to_string())
}

/// One plan; `Err` carries why it does not count (not a 201, or not the model's plan).
async fn plan(conn: &mut Conn, n: usize) -> anyhow::Result<Result<(), String>> {
    let body = json!({"description": task(n)}).to_string();
    let (status, bytes) = conn.send("POST", "/api/v1/tasks/plan", Some(&body), None).await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(match (status, v["planner"].as_str()) {
        (201, Some("llm")) => Ok(()),
        _ => Err(format!("{status} planner {} {}", v["planner"], v["planner_reason"])),
    })
}

/// Plans, errors and latency of one part.
struct Part {
    plans: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    /// CPU seconds the server used meanwhile (when it is ours to watch).
    server_cpu: Option<f64>,
}

impl Part {
    fn new() -> anyhow::Result<Part> {
        Ok(Part {
            plans: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            server_cpu: None,
        })
    }
}

/// Plans back to back on one connection: `count` of them, or until `deadline`.
async fn planning(addr: SocketAddr, key: &str, first: usize, count: usize, deadline: Instant) -> anyhow::Result<Part> {
    let mut conn = Conn::open(addr, key).await?;
    let mut part = Part::new()?;
    let began = Instant::now();
    for n in first..first + count {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        let outcome = plan(&mut conn, n).await?;
        part.latency_us.record(t.elapsed().as_micros().max(1) as u64)?;
        part.plans += 1;
        if let Err(why) = outcome {
            if part.errors == 0 {
                eprintln!("plan {n}: {why}");
            }
            part.errors += 1;
        }
    }
    part.elapsed = began.elapsed();
    Ok(part)
}

/// `CONCURRENT` connections planning side by side for `duration`.
async fn concurrent(addr: SocketAddr, key: &str, duration: Duration) -> anyhow::Result<Part> {
    let deadline = Instant::now() + duration;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONCURRENT {
        let key = key.to_owned();
        // Far apart first numbers keep the connections' tasks apart.
        tasks.push(tokio::spawn(async move {
            planning(addr, &key, (c + 1) * 1_000_000, usize::MAX / 2, deadline).await
        }));
    }
    let mut all = Part::new()?;
    for t in tasks {
        let p = t.await??;
        all.plans += p.plans;
        all.errors += p.errors;
        all.latency_us.add(&p.latency_us)?;
    }
    all.elapsed = began.elapsed();
    Ok(all)
}

/// The model call alone: the server's last request to the fake, replayed from this client.
async fn model_calls(llm: SocketAddr, body: &str) -> anyhow::Result<Part> {
    let mut conn = Conn::open(llm, "sk-bench").await?;
    let mut part = Part::new()?;
    let began = Instant::now();
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let (status, _) = conn.send("POST", "/v1/chat/completions", Some(body), None).await?;
        part.latency_us.record(t.elapsed().as_micros().max(1) as u64)?;
        part.plans += 1;
        part.errors += u64::from(status != 200);
    }
    part.elapsed = began.elapsed();
    Ok(part)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn row(name: &str, p: &Part) {
    let cpu = p
        .server_cpu
        .map(|c| format!("{:.2} ms", c * 1e3 / p.plans.max(1) as f64))
        .unwrap_or_default();
    println!(
        "{:<48} {:>12.0} {:>10.3} {:>10.3} {:>10.3} {:>8} {:>14}",
        name,
        p.plans as f64 / p.elapsed.as_secs_f64(),
        ms(&p.latency_us, 0.5),
        ms(&p.latency_us, 0.99),
        p.latency_us.max() as f64 / 1000.0,
        p.errors,
        cpu
    );
}

/// Runs `part`, with the server's CPU seconds meanwhile.
async fn watched(
    cpu: &impl Fn() -> Option<f64>,
    part: impl Future<Output = anyhow::Result<Part>>,
) -> anyhow::Result<Part> {
    let before = cpu();
    let mut p = part.await?;
    p.server_cpu = before.zip(cpu()).map(|(a, b)| b - a);
    Ok(p)
}

/// Runs the scenario and prints its figures; `cpu` reads the server's CPU seconds.
pub async fn run(
    addr: SocketAddr,
    admin_key: &str,
    duration: Duration,
    cpu: impl Fn() -> Option<f64>,
) -> anyhow::Result<()> {
    let (llm, fake, fake_task) = provider().await?;
    let mut conn = Conn::open(addr, admin_key).await?;
    organization(&mut conn, llm).await?;
    // The first plans warm the server's caches and say whether the model is reachable at all.
    let warm = planning(addr, admin_key, 0, 10, Instant::now() + Duration::from_secs(60)).await?;
    if warm.errors > 0 {
        bail!(
            "the server did not plan with the fake model at {llm}: it must run with \
             --allow-private-model-urls and reach this machine's loopback (see the plan above)"
        );
    }
    let replay = String::from_utf8(fake.last.lock().expect("not poisoned").to_vec())?;
    let alone = model_calls(llm, &replay).await?;
    fake.spent_us.lock().expect("not poisoned").reset();
    let asked_before = fake.requests.load(Ordering::Relaxed);
    let far = Instant::now() + Duration::from_secs(3600);
    let one = watched(&cpu, planning(addr, admin_key, 100, SEQUENTIAL, far)).await?;
    let many = watched(&cpu, concurrent(addr, admin_key, duration)).await?;
    let asked = fake.requests.load(Ordering::Relaxed) - asked_before;
    fake_task.abort();

    let spent = fake.spent_us.lock().expect("not poisoned").clone();
    println!();
    println!(
        "task planning: {AGENTS} agents (a third with a shell skill), {TEAMS} teams; a fake provider on {llm} \
         answers at once with a valid 3-step plan"
    );
    println!(
        "{:<48} {:>12} {:>10} {:>10} {:>10} {:>8} {:>14}",
        "scenario", "requests/s", "p50 ms", "p99 ms", "max ms", "errors", "server CPU"
    );
    row(&format!("model call alone (replayed, {SEQUENTIAL} calls)"), &alone);
    row(&format!("POST /tasks/plan, 1 connection ({SEQUENTIAL})"), &one);
    row(&format!("POST /tasks/plan, {CONCURRENT} connections"), &many);
    let over = |p: &Part, q: f64| ms(&p.latency_us, q) - ms(&alone.latency_us, q);
    println!(
        "overhead over the model call: 1 connection p50 {:.3} ms, p99 {:.3} ms; {CONCURRENT} connections p50 {:.3} ms, \
         p99 {:.3} ms",
        over(&one, 0.5),
        over(&one, 0.99),
        over(&many, 0.5),
        over(&many, 0.99)
    );
    println!(
        "the fake's own time per call p50 {:.3} ms, p99 {:.3} ms; model calls per plan {:.2}",
        ms(&spent, 0.5),
        ms(&spent, 0.99),
        asked as f64 / (one.plans + many.plans).max(1) as f64
    );
    Ok(())
}
