//! The execution engine's bench scenarios: dispatch latency (execute → claim by an idle
//! long-polling worker) and end-to-end throughput (producers execute while 8 workers each
//! claim, post 3 events and complete), with the server's memory after them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// One keep-alive connection speaking as one client.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr, key: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            host: addr.to_string(),
            auth: format!("Bearer {key}"),
        })
    }

    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        lease: Option<&str>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let lease: Vec<(&str, &str)> = lease.map(|l| ("x-lease-id", l)).into_iter().collect();
        self.send_with(method, path, body, &lease).await
    }

    /// A request with more headers (a lease, a webhook's signature).
    pub(crate) async fn send_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.auth);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    pub(crate) async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.send(method, path, body, None).await?;
        if status != want {
            bail!("{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A claim's execution id and lease.
pub(crate) fn claimed(bytes: &[u8]) -> anyhow::Result<(String, String)> {
    let v: Value = serde_json::from_slice(bytes)?;
    let claim = &v["claim"];
    let id = claim["execution"]["id"].as_str().context("no execution in the claim")?;
    let lease = claim["lease_id"].as_str().context("no lease in the claim")?;
    Ok((id.to_owned(), lease.to_owned()))
}

/// Registers a worker on `queue`; returns its id.
pub(crate) async fn register(conn: &mut Conn, queue: &str, name: &str) -> anyhow::Result<String> {
    let body = format!(r#"{{"hostname":"{name}","version":"bench","capabilities":{{"max_concurrency":1}}}}"#);
    let v = conn
        .json(
            "POST",
            &format!("/api/v1/worker-queues/{queue}/start"),
            Some(&body),
            201,
        )
        .await?;
    v["worker_id"].as_str().map(str::to_owned).context("no worker_id")
}

/// Claims, posts 3 events in one batch, completes. Returns false when the poll found nothing.
async fn work_once(conn: &mut Conn, worker: &str, wait: f64) -> anyhow::Result<bool> {
    let (status, bytes) = conn
        .send(
            "POST",
            &format!("/api/v1/workers/{worker}/poll?wait={wait}"),
            None,
            None,
        )
        .await?;
    match status {
        204 => return Ok(false),
        200 => {}
        other => bail!("poll: {other} {}", String::from_utf8_lossy(&bytes)),
    }
    let (id, lease) = claimed(&bytes)?;
    let events = r#"{"events":[{"type":"run_started","data":{}},{"type":"message_chunk","data":{"content":"ok"}},{"type":"message","data":{"role":"assistant","content":"ok"}}]}"#;
    let (status, bytes) = conn
        .send(
            "POST",
            &format!("/api/v1/executions/{id}/events"),
            Some(events),
            Some(&lease),
        )
        .await?;
    if status != 201 {
        bail!("events: {status} {}", String::from_utf8_lossy(&bytes));
    }
    let done = r#"{"response":"ok","usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}"#;
    let (status, bytes) = conn
        .send(
            "POST",
            &format!("/api/v1/executions/{id}/complete"),
            Some(done),
            Some(&lease),
        )
        .await?;
    if status != 200 {
        bail!("complete: {status} {}", String::from_utf8_lossy(&bytes));
    }
    Ok(true)
}

/// Creates a queue in the default environment and an agent to execute.
pub(crate) async fn prepare(conn: &mut Conn, name: &str) -> anyhow::Result<(String, String)> {
    let envs = conn.json("GET", "/api/v1/environments?limit=500", None, 200).await?;
    let env = envs["items"]
        .as_array()
        .and_then(|items| items.iter().find(|e| e["name"] == "default"))
        .and_then(|e| e["id"].as_str())
        .context("no default environment")?
        .to_owned();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let queue = conn
        .json(
            "POST",
            &format!("/api/v1/environments/{env}/worker-queues"),
            Some(&format!(r#"{{"name":"{name}-{}"}}"#, &run[20..])),
            201,
        )
        .await?;
    let agent = conn
        .json(
            "POST",
            "/api/v1/agents",
            Some(&format!(
                r#"{{"name":"bench {name} {run}","system_prompt":"Answer ok."}}"#
            )),
            201,
        )
        .await?;
    Ok((
        queue["id"].as_str().context("queue id")?.to_owned(),
        agent["id"].as_str().context("agent id")?.to_owned(),
    ))
}

pub(crate) fn execute_body(queue: &str, n: u64) -> String {
    format!(r#"{{"prompt":"task {n}","worker_queue_id":"{queue}"}}"#)
}

/// Execute → claim latency with one idle worker long-polling, `rounds` times.
async fn dispatch_latency(addr: SocketAddr, key: &str, rounds: u64) -> anyhow::Result<Histogram<u64>> {
    let mut client = Conn::open(addr, key).await?;
    let (queue, agent) = prepare(&mut client, "latency").await?;
    let mut worker_conn = Conn::open(addr, key).await?;
    let worker = register(&mut worker_conn, &queue, "latency-worker").await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let execute = format!("/api/v1/agents/{agent}/execute");
    for n in 0..rounds {
        let poll_path = format!("/api/v1/workers/{worker}/poll?wait=30");
        let mut conn = worker_conn;
        let poller = tokio::spawn(async move {
            let r = conn.send("POST", &poll_path, None, None).await;
            (conn, r, Instant::now())
        });
        // Let the poll reach the server and start waiting: the worker is idle when work arrives.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let sent = Instant::now();
        let (status, bytes) = client
            .send("POST", &execute, Some(&execute_body(&queue, n)), None)
            .await?;
        if status != 201 {
            bail!("execute: {status} {}", String::from_utf8_lossy(&bytes));
        }
        let (conn, polled, at) = poller.await?;
        let (status, bytes) = polled?;
        if status != 200 {
            bail!("poll: {status} {}", String::from_utf8_lossy(&bytes));
        }
        hist.record(at.duration_since(sent).as_micros().max(1) as u64)?;
        worker_conn = conn;
        let (id, lease) = claimed(&bytes)?;
        let (status, _) = worker_conn
            .send(
                "POST",
                &format!("/api/v1/executions/{id}/complete"),
                Some("{}"),
                Some(&lease),
            )
            .await?;
        if status != 200 {
            bail!("complete: {status}");
        }
    }
    Ok(hist)
}

/// What the throughput scenario measured.
pub struct Throughput {
    pub created: u64,
    pub completed: u64,
    pub elapsed: Duration,
    pub errors: u64,
}

/// `producers` connections execute back to back while `workers` workers claim, post 3 events
/// and complete, for `duration`; then the backlog is drained.
async fn throughput(
    addr: SocketAddr,
    key: &str,
    producers: usize,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let mut client = Conn::open(addr, key).await?;
    let (queue, agent) = prepare(&mut client, "throughput").await?;
    let created = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut conn = Conn::open(addr, key).await?;
        let worker = register(&mut conn, &queue, &format!("bench-worker-{w}")).await?;
        let (completed, errors, stop) = (completed.clone(), errors.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                match work_once(&mut conn, &worker, 0.2).await {
                    Ok(true) => {
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) if stop.load(Ordering::Relaxed) => break,
                    Ok(false) => {}
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("worker error: {e:#}");
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + duration;
    let mut producing = Vec::new();
    for _ in 0..producers {
        let mut conn = Conn::open(addr, key).await?;
        let (queue, created, errors) = (queue.clone(), created.clone(), errors.clone());
        let path = format!("/api/v1/agents/{agent}/execute");
        producing.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                match conn.send("POST", &path, Some(&execute_body(&queue, n)), None).await {
                    Ok((201, _)) => {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for p in producing {
        p.await?;
    }
    // Measured up to the moment the last accepted execution is completed.
    let total = created.load(Ordering::Relaxed);
    while completed.load(Ordering::Relaxed) < total && started.elapsed() < duration * 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    Ok(Throughput {
        created: total,
        completed: completed.load(Ordering::Relaxed),
        elapsed,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Runs both scenarios and prints their figures; `rss` reads the server's memory. Returns the
/// executions/s end to end.
pub async fn run(
    addr: SocketAddr,
    key: &str,
    duration: Duration,
    rss: impl Fn() -> Option<u64>,
) -> anyhow::Result<f64> {
    let latency = dispatch_latency(addr, key, 500).await?;
    let rss_before = rss();
    let t = throughput(addr, key, 8, 8, duration).await?;
    let rss_after = rss();
    println!();
    println!(
        "execute → claim, idle long-polling worker (500 rounds): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
    let rate = t.completed as f64 / t.elapsed.as_secs_f64();
    println!(
        "executions end to end (8 producers; 8 workers: claim, 3 events in one post, complete): {rate:.0}/s \
         ({} created, {} completed in {:.1} s, {} errors)",
        t.created,
        t.completed,
        t.elapsed.as_secs_f64(),
        t.errors
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "server RSS: {:.1} MiB before the executions, {:.1} MiB after {} more",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            t.completed
        );
    }
    Ok(rate)
}
