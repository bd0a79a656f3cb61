//! The fan-out scenario: one execution followed over SSE by many clients (viewer keys of 100
//! streams each, the per-key limit) while a worker posts its events one at a time. Every
//! event must reach every client once and in order; its delivery time is from just before
//! the worker posts it to when a client has read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::bench_exec::{Conn, execute_body, prepare, register};

/// Streams one key may hold open (the server's `MAX_STREAMS_PER_KEY`).
const STREAMS_PER_KEY: usize = 100;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What one client saw of the run's ticks.
#[derive(Default)]
struct Seen {
    ticks: usize,
    duplicates: usize,
    out_of_order: usize,
    latency_us: Vec<u64>,
}

/// Follows execution `id` with `key` until its `done` event; `ready` is passed once the
/// stream answered.
async fn follow(addr: SocketAddr, key: String, id: String, ready: Arc<Barrier>) -> anyhow::Result<Seen> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("/api/v1/executions/{id}/stream"))
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    if resp.status() != 200 {
        bail!("stream: {}", resp.status());
    }
    ready.wait().await;
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut seen = Seen::default();
    let mut last_tick: Option<i64> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        let at = now_us();
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            let (mut kind, mut payload) = ("message", "");
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    payload = v.trim();
                }
            }
            if kind == "done" {
                return Ok(seen);
            }
            let Ok(v) = serde_json::from_str::<Value>(payload) else {
                continue;
            };
            let (Some(tick), Some(sent)) = (v["tick"].as_i64(), v["sent_us"].as_u64()) else {
                continue;
            };
            match last_tick {
                Some(t) if tick == t => seen.duplicates += 1,
                Some(t) if tick != t + 1 => seen.out_of_order += 1,
                _ => {}
            }
            last_tick = Some(tick);
            seen.ticks += 1;
            seen.latency_us.push(at.saturating_sub(sent));
        }
    }
    bail!("the stream ended without its done event")
}

/// Runs the scenario: `clients` followers, `events` ticks 10 ms apart.
pub async fn run(addr: SocketAddr, admin_key: &str, clients: usize, events: usize) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr, admin_key).await?;
    let (queue, agent) = prepare(&mut conn, "fan-out").await?;
    let mut keys = Vec::new();
    for i in 0..clients.div_ceil(STREAMS_PER_KEY) {
        let body = format!(r#"{{"name":"bench fan-out {i}","role":"viewer"}}"#);
        let v = conn.json("POST", "/api/v1/api-keys", Some(&body), 201).await?;
        keys.push(v["key"].as_str().context("no key")?.to_owned());
    }
    let e = conn
        .json(
            "POST",
            &format!("/api/v1/agents/{agent}/execute"),
            Some(&execute_body(&queue, 0)),
            201,
        )
        .await?;
    let id = e["execution_id"].as_str().context("no execution id")?.to_owned();

    let ready = Arc::new(Barrier::new(clients + 1));
    let followers: Vec<_> = (0..clients)
        .map(|i| {
            let (key, id, ready) = (keys[i / STREAMS_PER_KEY].clone(), id.clone(), ready.clone());
            tokio::spawn(follow(addr, key, id, ready))
        })
        .collect();
    // Every client is subscribed before the first tick.
    tokio::time::timeout(Duration::from_secs(60), ready.wait())
        .await
        .context("the clients did not all connect within 60 s")?;

    let worker = register(&mut conn, &queue, "fan-out").await?;
    let (status, bytes) = conn
        .send("POST", &format!("/api/v1/workers/{worker}/poll?wait=5"), None, None)
        .await?;
    if status != 200 {
        bail!("poll: {status} {}", String::from_utf8_lossy(&bytes));
    }
    let (claimed, lease) = crate::bench_exec::claimed(&bytes)?;
    if claimed != id {
        bail!("the worker claimed another execution");
    }
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..events {
        tick.tick().await;
        let body = format!(
            r#"{{"events":[{{"type":"message_chunk","data":{{"content":"tick {n} ","tick":{n},"sent_us":{}}}}}]}}"#,
            now_us()
        );
        let (status, bytes) = conn
            .send(
                "POST",
                &format!("/api/v1/executions/{id}/events"),
                Some(&body),
                Some(&lease),
            )
            .await?;
        if status != 201 {
            bail!("events: {status} {}", String::from_utf8_lossy(&bytes));
        }
    }
    let (status, bytes) = conn
        .send(
            "POST",
            &format!("/api/v1/executions/{id}/complete"),
            Some(r#"{"response":"done"}"#),
            Some(&lease),
        )
        .await?;
    if status != 200 {
        bail!("complete: {status} {}", String::from_utf8_lossy(&bytes));
    }

    let mut latency = Histogram::<u64>::new(3)?;
    let (mut delivered, mut duplicates, mut out_of_order, mut failed) = (0, 0, 0, 0);
    for f in followers {
        match tokio::time::timeout(Duration::from_secs(60), f).await {
            Ok(Ok(Ok(seen))) => {
                delivered += seen.ticks;
                duplicates += seen.duplicates;
                out_of_order += seen.out_of_order;
                for us in seen.latency_us {
                    latency.record(us.max(1))?;
                }
            }
            Ok(Ok(Err(e))) => {
                failed += 1;
                eprintln!("a client failed: {e:#}");
            }
            _ => failed += 1,
        }
    }
    let expected = clients * events;
    println!();
    println!(
        "SSE fan-out, {clients} clients × {events} events: delivered {delivered} of {expected}, \
         {duplicates} twice, {out_of_order} out of order, {failed} clients failed; \
         delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
    if delivered != expected || duplicates > 0 || out_of_order > 0 || failed > 0 {
        bail!("not every event reached every client exactly once, in order");
    }
    Ok(())
}
