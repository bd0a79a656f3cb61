//! The knowledge scenario: full-text search over 100,000 knowledge items, a 2-hop Cypher
//! query over a context graph of 100,000 nodes and 300,000 relationships, then hybrid search
//! once a fake embedding model in this process has embedded every item; each measured one
//! request after another (p50, p99) once the data is loaded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::bench_exec::Conn;

/// Knowledge items searched.
const ITEMS: usize = 100_000;
/// Graph nodes; each has `OUT_DEGREE` relationships to others.
const NODES: usize = 100_000;
const OUT_DEGREE: usize = 3;
/// Nodes or relationships per ingestion request (the API's maximum).
const BATCH: usize = 1000;
/// Connections loading items side by side.
const LOADERS: usize = 4;
/// Words the generated texts draw from.
const VOCABULARY: usize = 5000;
/// Dimensions of the fake embedding model's vectors (those of a small real model).
const DIMENSIONS: usize = 384;

/// A cheap deterministic generator (xorshift), so every run loads the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Word `i` of the vocabulary: pronounceable and distinct (`w` + base-26 letters).
fn word(mut i: usize) -> String {
    let mut w = String::from("w");
    loop {
        w.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return w;
        }
    }
}

/// A text of `n` words, common words more likely than rare ones (roughly Zipf's law).
fn text(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| {
            let a = rng.below(VOCABULARY) + 1;
            word(rng.below(a))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(addr: SocketAddr, key: &str, duration: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    load_items(addr, key).await?;
    eprintln!("knowledge: {ITEMS} items loaded in {:.0} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    load_graph(addr, key).await?;
    eprintln!(
        "knowledge: {NODES} nodes and {} relationships loaded in {:.0} s",
        NODES * OUT_DEGREE,
        t.elapsed().as_secs_f64()
    );
    let mut conn = Conn::open(addr, key).await?;
    let mut rng = Rng(0x5eed_cafe);
    let search = measure(&mut conn, duration, |_| {
        let q = format!("{} {}", word(rng.below(200)), word(200 + rng.below(2000)));
        (
            "GET",
            format!("/api/v1/knowledge/search?q={}&limit=10", q.replace(' ', "%20")),
            None,
        )
    })
    .await?;
    let mut rng = Rng(0xdead_beef);
    let hops = measure(&mut conn, duration, |_| {
        let name = format!("node-{}", rng.below(NODES));
        let query = format!(
            "MATCH (a:Service {{name: '{name}'}})-[:DEPENDS_ON]->(b)-[:DEPENDS_ON]->(c) \
             RETURN b.name AS via, c.name AS reached, c.tier AS tier ORDER BY reached LIMIT 100"
        );
        (
            "POST",
            "/api/v1/graph/query".to_string(),
            Some(json!({ "query": query }).to_string()),
        )
    })
    .await?;
    let (llm, embeddings_requests, fake) = fake_embeddings().await?;
    let t = Instant::now();
    embedding_model(&mut conn, llm).await?;
    eprintln!(
        "knowledge: {ITEMS} items embedded in {:.0} s ({} embeddings requests)",
        t.elapsed().as_secs_f64(),
        embeddings_requests.load(Ordering::Relaxed)
    );
    let mut rng = Rng(0x5eed_cafe);
    let hybrid = measure(&mut conn, duration, |_| {
        let q = format!("{} {}", word(rng.below(200)), word(200 + rng.below(2000)));
        (
            "GET",
            format!("/api/v1/knowledge/search?q={}&limit=10", q.replace(' ', "%20")),
            None,
        )
    })
    .await?;
    fake.abort();
    println!();
    println!("kubiya-cp bench --only knowledge: one request at a time, server on {addr}");
    print_parts(
        "scenario",
        &[
            (format!("GET /knowledge/search (2 words, {ITEMS} items)"), &search),
            (
                format!("GET /knowledge/search hybrid ({ITEMS} items, {DIMENSIONS} dims)"),
                &hybrid,
            ),
            (
                format!("POST /graph/query 2 hops ({NODES} nodes, {} rels)", NODES * OUT_DEGREE),
                &hops,
            ),
        ],
    );
    Ok(())
}

/// A fake OpenAI-compatible embeddings provider on loopback: each word of a text adds to one
/// dimension (feature hashing), so texts sharing words point the same way. Counts requests.
async fn fake_embeddings() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>, tokio::task::JoinHandle<()>)> {
    async fn embed(State(requests): State<Arc<AtomicU64>>, Json(body): Json<Value>) -> Json<Value> {
        requests.fetch_add(1, Ordering::Relaxed);
        let data: Vec<Value> = body["input"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, text)| {
                let mut v = vec![0f32; DIMENSIONS];
                for w in text.as_str().unwrap_or_default().split_whitespace() {
                    let h = w.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
                    });
                    v[(h % DIMENSIONS as u64) as usize] += 1.0;
                }
                json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        Json(json!({"object": "list", "data": data, "usage": {"prompt_tokens": 0, "total_tokens": 0}}))
    }
    let requests = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embed))
        .with_state(requests.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, requests, task))
}

/// Adds the fake as the organization's embedding model and waits until every item is embedded.
async fn embedding_model(conn: &mut Conn, llm: SocketAddr) -> anyhow::Result<()> {
    let secret = json!({"name": "BENCH_EMBED_KEY", "value": "sk-bench"});
    conn.json("POST", "/api/v1/secrets", Some(&secret.to_string()), 201)
        .await?;
    let model = json!({"value": "bench/embed", "label": "Embed", "provider": "openai", "model_type": "embedding",
        "base_url": format!("http://{llm}/v1"), "api_key_secret": "BENCH_EMBED_KEY"});
    conn.json("POST", "/api/v1/models", Some(&model.to_string()), 201)
        .await?;
    let started = Instant::now();
    loop {
        let v = conn
            .json("GET", "/api/v1/knowledge/search?q=wa&limit=1", None, 200)
            .await?;
        if v["mode"] == "hybrid" && v["note"].is_null() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("items not embedded in 30 minutes: {v}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Requests made back to back for `duration`; `next(n)` says the n-th one.
pub(crate) struct Part {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) latency_us: Histogram<u64>,
}

/// One line per part: requests, p50, p99, max and errors, under a header naming `what`.
pub(crate) fn print_parts(what: &str, parts: &[(String, &Part)]) {
    println!(
        "{:<64} {:>10} {:>10} {:>10} {:>10} {:>8}",
        what, "requests", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for (name, part) in parts {
        let ms = |q: f64| part.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<64} {:>10} {:>10.3} {:>10.3} {:>10.3} {:>8}",
            name,
            part.requests,
            ms(0.5),
            ms(0.99),
            part.latency_us.max() as f64 / 1000.0,
            part.errors
        );
    }
}

pub(crate) async fn measure(
    conn: &mut Conn,
    duration: Duration,
    mut next: impl FnMut(u64) -> (&'static str, String, Option<String>),
) -> anyhow::Result<Part> {
    let mut part = Part {
        requests: 0,
        errors: 0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    // A short warm-up first: caches and the database's pages.
    let warm = Instant::now() + Duration::from_secs(1);
    let deadline = warm + duration;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let (method, path, body) = next(part.requests);
        let t = Instant::now();
        let (status, bytes) = conn.send(method, &path, body.as_deref(), None).await?;
        if now < warm {
            continue;
        }
        part.latency_us.record(t.elapsed().as_micros().max(1) as u64)?;
        part.requests += 1;
        if status != 200 {
            if part.errors == 0 {
                eprintln!("{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
            }
            part.errors += 1;
        }
    }
    Ok(part)
}

/// `ITEMS` items of 60 to 200 words, from `LOADERS` connections.
async fn load_items(addr: SocketAddr, key: &str) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for l in 0..LOADERS {
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, &key).await?;
            let mut rng = Rng(0x1234_5678 + l as u64);
            for i in (l..ITEMS).step_by(LOADERS) {
                let words = 60 + rng.below(140);
                let body = json!({"title": format!("{} {} {i}", word(rng.below(300)), word(rng.below(3000))),
                    "content": text(&mut rng, words), "tags": [format!("t{}", i % 20)]});
                conn.json("POST", "/api/v1/knowledge", Some(&body.to_string()), 201)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// `NODES` services, each depending on `OUT_DEGREE` others, in batches of `BATCH`.
async fn load_graph(addr: SocketAddr, key: &str) -> anyhow::Result<()> {
    let mut conn = Conn::open(addr, key).await?;
    for start in (0..NODES).step_by(BATCH) {
        let nodes: Vec<Value> = (start..(start + BATCH).min(NODES))
            .map(|i| {
                json!({"external_id": format!("n{i}"), "labels": ["Service"], "integration": "bench",
                    "properties": {"name": format!("node-{i}"), "tier": i % 4}})
            })
            .collect();
        let v = conn
            .json(
                "POST",
                "/api/v1/graph/nodes",
                Some(&json!({ "nodes": nodes }).to_string()),
                200,
            )
            .await?;
        if v["nodes"].as_array().map(Vec::len) != Some(nodes.len()) {
            bail!("ingestion answered {v}");
        }
    }
    let mut rng = Rng(0xfeed_f00d);
    let pairs: Vec<(usize, usize)> = (0..NODES)
        .flat_map(|i| (0..OUT_DEGREE).map(move |k| (i, k)))
        .map(|(i, k)| (i, (i + 1 + k * 7919 + rng.below(NODES - 1)) % NODES))
        .filter(|(a, b)| a != b)
        .collect();
    for chunk in pairs.chunks(BATCH) {
        let rels: Vec<Value> = chunk
            .iter()
            .map(|(a, b)| {
                json!({"type": "DEPENDS_ON", "from": {"integration": "bench", "external_id": format!("n{a}")},
                    "to": {"integration": "bench", "external_id": format!("n{b}")}})
            })
            .collect();
        conn.json(
            "POST",
            "/api/v1/graph/relationships",
            Some(&json!({ "relationships": rels }).to_string()),
            200,
        )
        .await
        .context("ingesting relationships")?;
    }
    Ok(())
}
