//! `kubiya-cp bench`: starts this binary's server on a fresh SQLite database (or measures one
//! already running at `--url`) and reports requests/s, p50 and p99 per scenario.
//!
//! Build it in release mode (`cargo run --release -p kubiya-cp -- bench`): the server it starts
//! is this same executable.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::{BenchArgs, BenchPart};

struct Target {
    addr: SocketAddr,
    key: String,
}

/// One measured scenario.
struct Outcome {
    name: String,
    /// CPU seconds the server process used during the scenario (when it is ours to watch).
    server_cpu: Option<f64>,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; measure with `cargo run --release -p kubiya-cp -- bench`");
    }
    if args.only == Some(BenchPart::Policy) {
        return crate::bench_policy::run(Duration::from_secs(args.duration));
    }
    let (target, mut server, _dir) = match &args.url {
        Some(url) => {
            let key = args
                .api_key
                .clone()
                .context("--url needs --api-key (or KUBIYA_API_KEY)")?;
            let hostport = url.trim_start_matches("http://").trim_end_matches('/');
            let addr = tokio::net::lookup_host(hostport)
                .await?
                .next()
                .context("cannot resolve --url")?;
            (Target { addr, key }, None, None)
        }
        None => {
            let (target, child, dir) = start_server(args.server_database_url.as_deref()).await?;
            (target, Some(child), Some(dir))
        }
    };

    let result = measure(&target, &args, server.as_ref().and_then(|c| c.id())).await;
    if let Some(child) = server.as_mut() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    result
}

async fn measure(target: &Target, args: &BenchArgs, server_pid: Option<u32>) -> anyhow::Result<()> {
    let rss_idle = server_pid.and_then(rss_kib);
    let duration = Duration::from_secs(args.duration);
    unlimit(target).await?;
    if args.only == Some(BenchPart::Executions) {
        return executions(target, args, server_pid).await;
    }
    if args.only == Some(BenchPart::Streams) {
        return streams(target).await;
    }
    if args.only == Some(BenchPart::Workflows) {
        return crate::bench_workflow::run(target.addr, &target.key, duration).await;
    }
    if args.only == Some(BenchPart::Jobs) {
        return crate::bench_jobs::run(target.addr, &target.key, duration).await;
    }
    if args.only == Some(BenchPart::Planning) {
        return crate::bench_planning::run(target.addr, &target.key, duration, || server_pid.and_then(cpu_seconds))
            .await;
    }
    if args.only == Some(BenchPart::Knowledge) {
        return crate::bench_knowledge::run(target.addr, &target.key, duration).await;
    }
    if args.only == Some(BenchPart::Dashboard) {
        return crate::bench_dashboard::run(target.addr, &target.key, duration).await;
    }
    setup(target).await?;
    let scenarios: [(&str, &str, bool); 3] = [
        ("GET /api/health", "/api/health", false),
        (
            "GET /api/v1/projects?limit=100 (100 projects)",
            "/api/v1/projects?limit=100",
            true,
        ),
        (
            "GET /api/v1/agents?limit=100 (2 envs, 3 skills each)",
            "/api/v1/agents?limit=100",
            true,
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, path, authed) in scenarios {
        let key = authed.then_some(target.key.as_str());
        // A short warm-up fills connection pools and caches before measuring.
        load(target.addr, path, key, args.connections, Duration::from_secs(1), name).await?;
        let cpu_before = server_pid.and_then(cpu_seconds);
        let mut outcome = load(target.addr, path, key, args.connections, duration, name).await?;
        outcome.server_cpu = cpu_before.zip(server_pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
        outcomes.push(outcome);
    }
    let rss_after = server_pid.and_then(rss_kib);

    println!();
    println!(
        "kubiya-cp bench: {} connections, {} s per scenario, server on {}",
        args.connections, args.duration, target.addr
    );
    println!(
        "{:<48} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "requests/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for o in &outcomes {
        let rps = o.requests as f64 / o.elapsed.as_secs_f64();
        let ms = |q: f64| o.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let cpu = o
            .server_cpu
            .map(|c| format!("{:.0} µs", c * 1e6 / o.requests.max(1) as f64))
            .unwrap_or_default();
        println!(
            "{:<48} {:>12.0} {:>10.3} {:>10.3} {:>10.3} {:>8} {:>14}",
            o.name,
            rps,
            ms(0.5),
            ms(0.99),
            o.latency_us.max() as f64 / 1000.0,
            o.errors,
            cpu
        );
    }
    if let (Some(idle), Some(after)) = (rss_idle, rss_after) {
        println!(
            "server RSS: {:.1} MiB idle, {:.1} MiB after the list scenarios",
            idle as f64 / 1024.0,
            after as f64 / 1024.0
        );
    }
    if args.only == Some(BenchPart::Lists) {
        return Ok(());
    }
    crate::bench_policy::run(duration.min(Duration::from_secs(3)))?;
    executions(target, args, server_pid).await?;
    streams(target).await?;
    crate::bench_workflow::run(target.addr, &target.key, duration).await
}

/// One execution followed by 1,000 SSE clients while its worker posts 200 events.
async fn streams(target: &Target) -> anyhow::Result<()> {
    // A thousand client connections, in this process.
    cp_server::http::connections::raise_file_limit();
    crate::bench_stream::run(target.addr, &target.key, 1000, 200).await
}

/// The executions scenarios; on PostgreSQL also the database's own ceiling for the same writes
/// (`bench_floor`), measured right after, and the server's share of it.
async fn executions(target: &Target, args: &BenchArgs, server_pid: Option<u32>) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    let rate = crate::bench_exec::run(target.addr, &target.key, duration, || server_pid.and_then(rss_kib)).await?;
    let Some(url) = args
        .server_database_url
        .as_deref()
        .filter(|u| u.starts_with("postgres"))
    else {
        return Ok(());
    };
    let floor = crate::bench_floor::run(url, duration).await?;
    println!(
        "PostgreSQL alone, the same writes from 16 clients (pg-floor): {floor:.0} executions/s; \
         the server reaches {:.0}% of it",
        100.0 * rate / floor
    );
    Ok(())
}

/// Starts `kubiya-cp serve` (this executable) on a free port with a fresh data dir.
async fn start_server(
    database_url: Option<&str>,
) -> anyhow::Result<(Target, tokio::process::Child, tempfile::TempDir)> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let dir = tempfile::tempdir()?;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let key = cp_store::keys::generate_key();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([
        "serve",
        "--max-org-rate-limit",
        "1000000",
        "--job-webhook-rate-limit",
        "1000000",
        // The planning scenario's model is a fake on this machine's loopback.
        "--allow-private-model-urls",
        "--listen",
        &addr.to_string(),
        "--data-dir",
    ])
    .arg(dir.path());
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let child = cmd
        .env("KUBIYA_CP_BOOTSTRAP_API_KEY", &key)
        .env("KUBIYA_CP_LOG", "warn")
        .env_remove("KUBIYA_CP_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server")?;
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = call(addr, "GET", "/api/ready", None, None).await {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the server did not become ready within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("server ready in {} ms", started.elapsed().as_millis());
    Ok((Target { addr, key }, child, dir))
}

/// Lifts the org's rate limit, which the load would hit at once.
async fn unlimit(target: &Target) -> anyhow::Result<()> {
    let key = Some(target.key.as_str());
    let body = r#"{"rate_limit_tier":"enterprise","rate_limit_per_minute":1000000}"#;
    let (status, text) = call(target.addr, "PATCH", "/api/v1/organization/settings", key, Some(body)).await?;
    if status != 200 {
        bail!("cannot lift the rate limit: {status} {text}");
    }
    Ok(())
}

/// Makes 100 projects and 100 agents (each linked to 2 environments and 3 skills) to list.
async fn setup(target: &Target) -> anyhow::Result<()> {
    let key = Some(target.key.as_str());
    let run = uuid::Uuid::now_v7().simple().to_string();
    for i in 0..100 {
        let body = format!(r#"{{"name":"bench {run} {i}","key":"B{}{i}"}}"#, &run[24..]);
        let (status, text) = call(target.addr, "POST", "/api/v1/projects", key, Some(&body)).await?;
        if status != 201 {
            bail!("cannot create a project: {status} {text}");
        }
    }
    let mut envs = Vec::new();
    for i in 0..2 {
        let body = format!(r#"{{"name":"bench-{run}-{i}"}}"#);
        envs.push(created_id(target, "/api/v1/environments", &body).await?);
    }
    let mut skills = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"name":"bench {run} {i}","type":"shell","configuration":{{"timeout":30}}}}"#);
        skills.push(created_id(target, "/api/v1/skills", &body).await?);
    }
    let quoted = |ids: &[String]| ids.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(",");
    for i in 0..100 {
        let body = format!(
            r#"{{"name":"bench {run} {i}","system_prompt":"You are agent {i}.","environment_ids":[{}],"skill_ids":[{}]}}"#,
            quoted(&envs),
            quoted(&skills)
        );
        created_id(target, "/api/v1/agents", &body).await?;
    }
    Ok(())
}

/// POSTs `body` and returns the new resource's id.
async fn created_id(target: &Target, path: &str, body: &str) -> anyhow::Result<String> {
    let (status, text) = call(target.addr, "POST", path, Some(&target.key), Some(body)).await?;
    if status != 201 {
        bail!("POST {path}: {status} {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["id"].as_str().map(str::to_string).context("no id in the answer")
}

/// One request on a fresh connection (setup and readiness only).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// `connections` keep-alive connections, each sending requests back to back for `duration`.
async fn load(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    connections: usize,
    duration: Duration,
    name: &str,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let path = path.to_owned();
        let auth = key.map(|k| format!("Bearer {k}"));
        tasks.push(tokio::spawn(async move {
            connection_loop(addr, &path, auth.as_deref(), deadline).await
        }));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors) = (0, 0);
    for t in tasks {
        let (h, ok, bad) = t.await??;
        latency_us.add(&h)?;
        requests += ok;
        errors += bad;
    }
    Ok(Outcome {
        name: name.to_owned(),
        server_cpu: None,
        requests,
        errors,
        elapsed: started.elapsed(),
        latency_us,
    })
}

async fn connection_loop(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
    deadline: Instant,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let host = addr.to_string();
    let (mut ok, mut bad) = (0u64, 0u64);
    while Instant::now() < deadline {
        let mut req = Request::get(path).header("host", &host);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let t = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
        if status.is_success() {
            ok += 1;
        } else {
            bad += 1;
        }
    }
    Ok((hist, ok, bad))
}

/// User plus system CPU time a process has used, in seconds (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
