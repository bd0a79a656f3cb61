//! The workflow scenarios, with a real `kubiya-cp worker` process (this executable) running
//! `command` steps (`true`): the step-to-step overhead of a 10-step chain, from the server's
//! own timestamps (a step's execution completed → the next step's execution created, i.e.
//! claimable; and → claimed by the worker), and the runs per second of a 3-step chain with
//! many runs in flight.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::bench_exec::{Conn, prepare};

/// Runs of the 10-step chain measured.
const CHAIN_RUNS: usize = 30;
/// Runs of the 3-step chain kept in flight.
const IN_FLIGHT: usize = 16;

fn time(v: &Value) -> anyhow::Result<DateTime<Utc>> {
    let s = v.as_str().context("no timestamp")?;
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

/// A workflow of `steps` `true` commands, each depending on the one before; its id.
async fn chain(conn: &mut Conn, queue: &str, name: &str, steps: usize) -> anyhow::Result<String> {
    let steps: Vec<Value> = (0..steps)
        .map(|i| {
            let mut s = json!({"id": format!("s{i}"), "type": "command", "command": "true"});
            if i > 0 {
                s["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            s
        })
        .collect();
    let body = json!({"name": name, "default_worker_queue_id": queue, "steps": steps}).to_string();
    let w = conn.json("POST", "/api/v1/workflows", Some(&body), 201).await?;
    Ok(w["id"].as_str().context("workflow id")?.to_owned())
}

async fn start(conn: &mut Conn, workflow: &str) -> anyhow::Result<String> {
    let r = conn
        .json("POST", &format!("/api/v1/workflows/{workflow}/start"), Some("{}"), 201)
        .await?;
    Ok(r["id"].as_str().context("run id")?.to_owned())
}

/// The run once it ended.
async fn ended(conn: &mut Conn, run: &str) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let r = conn
            .json("GET", &format!("/api/v1/workflow-runs/{run}"), None, 200)
            .await?;
        match r["status"].as_str() {
            Some("completed") => return Ok(r),
            Some("failed" | "cancelled") => bail!("run {run} ended {}: {}", r["status"], r["error"]),
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("run {run} did not end within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker process on `queue` with a new worker key.
async fn worker(conn: &mut Conn, addr: SocketAddr, queue: &str) -> anyhow::Result<tokio::process::Child> {
    let key = conn
        .json(
            "POST",
            "/api/v1/api-keys",
            Some(r#"{"name":"bench workflows","role":"worker"}"#),
            201,
        )
        .await?;
    let key = key["key"].as_str().context("no key")?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    tokio::process::Command::new(exe)
        .args(["worker", "--queue-id", queue, "--concurrency", "32"])
        .args(["--control-plane-url", &format!("http://{addr}")])
        .env("KUBIYA_API_KEY", key)
        .env("KUBIYA_CP_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the worker")
}

pub async fn run(addr: SocketAddr, admin_key: &str, duration: Duration) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr, admin_key).await?;
    let (queue, _agent) = prepare(&mut conn, "workflows").await?;
    let mut worker = worker(&mut conn, addr, &queue).await?;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let ten = chain(&mut conn, &queue, &format!("bench chain of 10 {tag}"), 10).await?;
    let three = chain(&mut conn, &queue, &format!("bench chain of 3 {tag}"), 3).await?;
    // A first run warms the worker's connection and the server's caches.
    let warm = start(&mut conn, &ten).await?;
    ended(&mut conn, &warm).await?;

    let mut advance = Histogram::<u64>::new(3)?;
    let mut to_claim = Histogram::<u64>::new(3)?;
    for _ in 0..CHAIN_RUNS {
        let id = start(&mut conn, &ten).await?;
        let run = ended(&mut conn, &id).await?;
        let mut previous_end: Option<DateTime<Utc>> = None;
        for step in run["steps"].as_array().context("no steps")? {
            let e = step["execution_id"].as_str().context("no execution")?;
            let e = conn.json("GET", &format!("/api/v1/executions/{e}"), None, 200).await?;
            let (created, claimed) = (time(&e["created_at"])?, time(&e["started_at"])?);
            if let Some(end) = previous_end {
                let us = |t: DateTime<Utc>| (t - end).num_microseconds().unwrap_or(0).max(0) as u64;
                advance.record(us(created))?;
                to_claim.record(us(claimed))?;
            }
            previous_end = Some(time(&e["completed_at"])?);
        }
    }

    // Runs of the 3-step chain, IN_FLIGHT at a time, for `duration`.
    let began = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (addr, key, three) = (addr, admin_key.to_owned(), three.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &key).await?;
            let mut done = 0u64;
            while began.elapsed() < duration {
                let id = start(&mut conn, &three).await?;
                ended(&mut conn, &id).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut runs = 0;
    for t in tasks {
        runs += t.await??;
    }
    let elapsed = began.elapsed();
    let _ = worker.start_kill();
    let _ = worker.wait().await;

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!();
    println!("workflows: a real worker running `true` command steps");
    println!(
        "10-step chain ({CHAIN_RUNS} runs, {} step changes): step end → next step claimable p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        advance.len(),
        ms(&advance, 0.5),
        ms(&advance, 0.99),
        advance.max() as f64 / 1000.0
    );
    println!(
        "{:>40} → next step claimed by the worker p50 {:.1} ms, p99 {:.1} ms",
        "",
        ms(&to_claim, 0.5),
        ms(&to_claim, 0.99)
    );
    println!(
        "3-step chain, {IN_FLIGHT} runs in flight: {:.1} runs/s ({runs} runs in {:.1} s)",
        runs as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    Ok(())
}
