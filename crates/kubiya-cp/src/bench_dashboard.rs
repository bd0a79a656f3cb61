//! The dashboard scenario: 1,000 agents and 10,000 executions (most completed with usage, some
//! failed, some still queued) loaded through the API and a worker, then each page's HTML
//! requested one after another (p50, p99).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::bench_exec::{Conn, claimed, register};
use crate::bench_knowledge::{Part, measure, print_parts};

const AGENTS: usize = 1_000;
const EXECUTIONS: usize = 10_000;
/// Connections loading side by side.
const LOADERS: usize = 4;

pub async fn run(addr: SocketAddr, key: &str, duration: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    let (agents, queue) = load(addr, key).await?;
    eprintln!(
        "dashboard: {AGENTS} agents and {EXECUTIONS} executions loaded in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    let mut conn = Conn::open(addr, key).await?;
    let recent = conn.json("GET", "/api/v1/executions?limit=1", None, 200).await?;
    let execution = recent["items"][0]["id"].as_str().context("no execution")?.to_owned();
    let pages = [
        "/".to_string(),
        "/agents".into(),
        "/agents?page=20".into(),
        format!("/agents/{}", agents[AGENTS / 2]),
        "/teams".into(),
        "/executions".into(),
        "/executions?status=completed&page=100".into(),
        format!("/executions?entity_id={}", agents[7]),
        format!("/executions/{execution}"),
        "/usage".into(),
        "/usage?group_by=model&days=30".into(),
        "/usage?group_by=day".into(),
        "/workflows".into(),
        "/environments".into(),
        "/policies".into(),
        "/skills".into(),
        "/api-keys".into(),
        format!("/executions?worker_queue_id={queue}"),
    ];
    // The whole duration is shared by the pages, at least 2 s each.
    let each = (duration / pages.len() as u32).max(Duration::from_secs(2));
    let mut rows = Vec::new();
    for page in &pages {
        let part = measure(&mut conn, each, |_| ("GET", page.clone(), None)).await?;
        rows.push((page.clone(), part));
    }
    println!();
    println!(
        "kubiya-cp bench --only dashboard: one request at a time, {AGENTS} agents, {EXECUTIONS} executions, server on {addr}"
    );
    let named: Vec<(String, &Part)> = rows
        .iter()
        .map(|(page, part)| {
            let name = if page.len() > 58 {
                format!("{}…", &page[..57])
            } else {
                page.clone()
            };
            (format!("GET {name}"), part)
        })
        .collect();
    print_parts("page", &named);
    Ok(())
}

/// Two models, `AGENTS` agents spread over them, a queue, and `EXECUTIONS` runs of those agents:
/// 80% completed with usage, 10% failed, 10% left queued. Returns the agents' ids and the queue.
async fn load(addr: SocketAddr, key: &str) -> anyhow::Result<(Vec<String>, String)> {
    let mut conn = Conn::open(addr, key).await?;
    let mut models = Vec::new();
    for (value, label) in [("bench/large", "Large"), ("bench/small", "Small")] {
        let body = json!({"value": value, "label": label, "provider": "openai",
            "pricing": {"input_per_1k": 0.003, "output_per_1k": 0.015}});
        let m = conn
            .json("POST", "/api/v1/models", Some(&body.to_string()), 201)
            .await?;
        models.push(m["id"].as_str().context("model id")?.to_owned());
    }
    let envs = conn.json("GET", "/api/v1/environments", None, 200).await?;
    let env = envs["items"][0]["id"].as_str().context("no environment")?;
    let queue = conn
        .json(
            "POST",
            &format!("/api/v1/environments/{env}/worker-queues"),
            Some(r#"{"name":"dashboard-bench"}"#),
            201,
        )
        .await?;
    let queue = queue["id"].as_str().context("queue id")?.to_owned();

    let mut tasks = Vec::new();
    for l in 0..LOADERS {
        let key = key.to_owned();
        let models = models.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &key).await?;
            let mut ids = Vec::new();
            for i in (l..AGENTS).step_by(LOADERS) {
                let body = json!({"name": format!("agent-{i:04}"), "description": format!("Bench agent number {i}"),
                    "model_id": models[i % models.len()], "system_prompt": "You are terse."});
                let a = conn
                    .json("POST", "/api/v1/agents", Some(&body.to_string()), 201)
                    .await?;
                ids.push((i, a["id"].as_str().context("agent id")?.to_owned()));
            }
            anyhow::Ok(ids)
        }));
    }
    let mut agents = vec![String::new(); AGENTS];
    for t in tasks {
        for (i, id) in t.await?? {
            agents[i] = id;
        }
    }

    let mut tasks = Vec::new();
    for l in 0..LOADERS {
        let key = key.to_owned();
        let agents = agents.clone();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &key).await?;
            for i in (l..EXECUTIONS).step_by(LOADERS) {
                let body =
                    json!({"prompt": format!("task {i}: check the service and report"), "worker_queue_id": queue});
                let path = format!("/api/v1/agents/{}/execute", agents[i % AGENTS]);
                conn.json("POST", &path, Some(&body.to_string()), 201).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }

    // One worker ends 90% of them, oldest first: every ninth fails, the rest complete.
    let worker = register(&mut conn, &queue, "dashboard-bench").await?;
    for n in 0..EXECUTIONS * 9 / 10 {
        let (status, bytes) = conn
            .send("POST", &format!("/api/v1/workers/{worker}/poll?wait=0"), None, None)
            .await?;
        anyhow::ensure!(status == 200, "poll: {status} {}", String::from_utf8_lossy(&bytes));
        let (id, lease) = claimed(&bytes)?;
        let (path, body) = if n % 9 == 8 {
            (
                format!("/api/v1/executions/{id}/fail"),
                json!({"error_message": "the service did not answer", "retryable": false}),
            )
        } else {
            let prompt = 200 + (n % 300) as i64;
            let usage = json!({"prompt_tokens": prompt, "completion_tokens": 50, "total_tokens": prompt + 50,
                "cost_usd": (prompt as f64 * 0.003 + 50.0 * 0.015) / 1000.0});
            (
                format!("/api/v1/executions/{id}/complete"),
                json!({"response": "all good", "usage": usage}),
            )
        };
        let (status, bytes) = conn.send("POST", &path, Some(&body.to_string()), Some(&lease)).await?;
        anyhow::ensure!(status == 200, "{path}: {status} {}", String::from_utf8_lossy(&bytes));
    }
    let _: Value = conn
        .json(
            "POST",
            &format!("/api/v1/workers/{worker}/disconnect"),
            Some(r#"{"reason":"bench loaded"}"#),
            200,
        )
        .await?;
    Ok((agents, queue))
}
