//! Cutting the database: readiness goes 503, requests answer 503 with the envelope, and the
//! server recovers on its own when the database is back (no restart).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Backend, TestApp, TestDb, assert_error};
use reqwest::Method;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A TCP proxy in front of PostgreSQL that can drop every connection and refuse new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                l.lock().await.push(tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Proxy { addr, cut, links }
    }

    async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `postgres://user@host:port/db?…` → (authority `host:port`, the URL with `host:port` replaced).
fn through(url: &str, proxy: &str) -> (String, String) {
    let start = url
        .find('@')
        .map(|i| i + 1)
        .unwrap_or_else(|| url.find("://").unwrap() + 3);
    let end = start + url[start..].find('/').unwrap();
    (
        url[start..end].to_string(),
        format!("{}{proxy}{}", &url[..start], &url[end..]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_database_answers_503_and_recovers_without_restart() {
    let mut db = TestDb::new(Backend::Postgres).await;
    let (upstream, _) = through(&db.url, "x");
    let proxy = Proxy::start(upstream).await;
    db.url = through(&db.url, &proxy.addr.to_string()).1;
    let app = TestApp::spawn_on(Backend::Postgres, db, |_| {}).await;
    assert_eq!(app.anon(Method::GET, "/api/ready").send().await.unwrap().status(), 200);
    assert_eq!(app.get("/api/v1/projects").await.status(), 200);

    proxy.cut().await;
    assert_error(
        app.anon(Method::GET, "/api/ready").send().await.unwrap(),
        503,
        "SERVICE_UNAVAILABLE",
    )
    .await;
    // Whether the key is resolved from the short cache or the database, the request meets the cut.
    let err = assert_error(app.get("/api/v1/projects").await, 503, "SERVICE_UNAVAILABLE").await;
    assert!(
        !err["message"].as_str().unwrap().contains("127.0.0.1"),
        "no internals leaked: {err}"
    );
    let health = app.anon(Method::GET, "/api/health").send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on the database");
    let detailed = crate::common::json(app.anon(Method::GET, "/api/health/detailed").send().await.unwrap()).await;
    assert_eq!(detailed["status"], "degraded");

    proxy.restore();
    let back = Instant::now();
    loop {
        if app.anon(Method::GET, "/api/ready").send().await.unwrap().status() == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/api/v1/projects").await.status(), 200);
}
