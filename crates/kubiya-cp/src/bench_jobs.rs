//! The jobs scenarios: signed inbound webhooks fired side by side (each one a firing and a
//! queued execution), and how late an every-second schedule fires after each due time, from
//! the server's own `due_at` and `fired_at`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::bench_exec::{Conn, prepare};

/// Webhook senders side by side.
const SENDERS: usize = 8;
/// How long the every-second schedule runs.
const SCHEDULE_FOR: Duration = Duration::from_secs(10);

fn sign(secret: &str, body: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn time(v: &Value) -> anyhow::Result<DateTime<Utc>> {
    let s = v.as_str().context("no timestamp")?;
    Ok(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc))
}

async fn job(conn: &mut Conn, body: Value) -> anyhow::Result<Value> {
    conn.json("POST", "/api/v1/jobs", Some(&body.to_string()), 201).await
}

pub async fn run(addr: SocketAddr, admin_key: &str, duration: Duration) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr, admin_key).await?;
    let (queue, agent) = prepare(&mut conn, "jobs").await?;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let hook = job(
        &mut conn,
        json!({"name": format!("bench webhook {tag}"), "trigger_type": "webhook", "entity_type": "agent",
            "entity_id": agent, "worker_queue_id": queue, "overlap": "allow",
            "prompt_template": "Review {{ payload.pull_request.title }}"}),
    )
    .await?;
    let secret = hook["webhook_secret"].as_str().context("no secret")?.to_owned();
    let path = format!(
        "/api/v1/jobs/webhook/{}",
        hook["webhook_path"].as_str().context("no path")?
    );

    let began = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let (key, secret, path) = (admin_key.to_owned(), secret.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &key).await?;
            let mut latency = Histogram::<u64>::new(3)?;
            let mut n = 0u64;
            while began.elapsed() < duration {
                n += 1;
                let body = json!({"pull_request": {"title": format!("change {sender}-{n}")}}).to_string();
                let (sig, id) = (sign(&secret, &body), format!("{sender}-{n}"));
                let headers = [
                    ("x-hub-signature-256", sig.as_str()),
                    ("x-github-delivery", id.as_str()),
                ];
                let t = Instant::now();
                let (status, bytes) = conn.send_with("POST", &path, Some(&body), &headers).await?;
                if status != 201 {
                    bail!("webhook: {status} {}", String::from_utf8_lossy(&bytes));
                }
                latency.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(latency)
        }));
    }
    let mut latency = Histogram::<u64>::new(3)?;
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = began.elapsed();

    // The first connection sat idle past the server's keep-alive timeout meanwhile.
    let mut conn = Conn::open(addr, admin_key).await?;
    let every = job(
        &mut conn,
        json!({"name": format!("bench schedule {tag}"), "trigger_type": "cron", "cron_schedule": "* * * * * *",
            "entity_type": "agent", "entity_id": agent, "worker_queue_id": queue, "overlap": "allow",
            "prompt_template": "tick {{ now }}"}),
    )
    .await?;
    tokio::time::sleep(SCHEDULE_FOR).await;
    let mut conn = Conn::open(addr, admin_key).await?;
    let id = every["id"].as_str().context("no job id")?;
    conn.json("POST", &format!("/api/v1/jobs/{id}/disable"), Some("{}"), 200)
        .await?;
    let firings = conn
        .json("GET", &format!("/api/v1/jobs/{id}/executions?limit=500"), None, 200)
        .await?;
    let mut late = Histogram::<u64>::new(3)?;
    for f in firings["items"].as_array().context("no firings")? {
        if f["due_at"].is_string() {
            let lag = time(&f["fired_at"])? - time(&f["due_at"])?;
            late.record(lag.num_microseconds().unwrap_or(0).max(0) as u64)?;
        }
    }

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!();
    println!("jobs: signed webhooks and an every-second schedule (agent executions queued, no worker)");
    println!(
        "webhook fire ({SENDERS} senders, {} firings): {:.0} firings/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latency.len(),
        latency.len() as f64 / elapsed.as_secs_f64(),
        ms(&latency, 0.5),
        ms(&latency, 0.99),
        latency.max() as f64 / 1000.0
    );
    println!(
        "schedule `* * * * * *` for {} s ({} firings): fired after its due time p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        SCHEDULE_FOR.as_secs(),
        late.len(),
        ms(&late, 0.5),
        ms(&late, 0.99),
        late.max() as f64 / 1000.0
    );
    Ok(())
}
