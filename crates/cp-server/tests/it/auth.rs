//! API §1 auth, keys, tenancy and rate limits, and API §2, on both backends.

use std::time::Duration;

use crate::common::{TestApp, assert_error, json};
use cp_types::org::Role;
use reqwest::Method;
use serde_json::json;

/// Waits until at least `needed` seconds remain in the current UTC minute, so a test that
/// counts requests in one fixed window does not straddle two.
async fn fresh_window(needed: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < needed {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

both_backends! {
    async fn the_three_header_forms_are_accepted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let k = &app.admin_key;
        for (name, value) in [
            ("authorization", format!("Bearer {k}")),
            ("authorization", format!("UserKey {k}")),
            ("authorization", format!("bearer {k}")),
            ("userkey", k.clone()),
        ] {
            let r = app.anon(Method::GET, "/api/v1/auth/validate").header(name, value).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let who = json(r).await;
            assert_eq!(who["id"], "default");
            assert_eq!(who["slug"], "default");
            assert_eq!(who["role"], "admin");
            assert!(who["key_id"].is_string());
        }
        let r = app.anon(Method::GET, "/api/v1/projects").send().await.unwrap();
        assert!(r.headers().get("x-ratelimit-limit").is_some(), "metered even without a key");
        assert_error(r, 401, "UNAUTHORIZED").await;
        let r = app.req_as("kby_not-a-real-key-at-all-000000000", Method::GET, "/api/v1/projects").send().await.unwrap();
        assert_error(r, 401, "UNAUTHORIZED").await;
        let r = app.anon(Method::GET, "/api/v1/projects").header("authorization", format!("Basic {k}")).send().await.unwrap();
        assert_error(r, 401, "UNAUTHORIZED").await;
        // Health, readiness, metrics, docs and the OpenAPI document need no key.
        for path in ["/api/health", "/api/ready", "/api/health/detailed", "/metrics", "/openapi.json", "/docs/"] {
            let r = app.anon(Method::GET, path).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert!(r.headers().get("x-ratelimit-limit").is_none(), "{path} is never limited");
        }
    }

    async fn roles_limit_what_a_key_can_do(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let viewer = app.key("default", Role::Viewer).await;
        let member = app.key("default", Role::Member).await;
        let worker = app.key("default", Role::Worker).await;
        let body = json!({"name": "P", "key": "PP"});

        // Viewers read, never write.
        assert_eq!(app.req_as(&viewer, Method::GET, "/api/v1/projects").send().await.unwrap().status(), 200);
        let r = app.req_as(&viewer, Method::POST, "/api/v1/projects").json(&body).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&viewer, Method::POST, "/api/v1/environments").json(&json!({"name": "vv"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        // Members write the catalog but cannot manage keys or settings.
        let r = app.req_as(&member, Method::POST, "/api/v1/projects").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let r = app.req_as(&member, Method::POST, "/api/v1/api-keys").json(&json!({"name": "x", "role": "admin"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&member, Method::GET, "/api/v1/api-keys").send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&member, Method::GET, "/api/v1/organization/settings").send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&member, Method::PATCH, "/api/v1/organization/settings").json(&json!({"policy_enforcement": "off"})).send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;

        // Worker keys are for the worker protocol, not the catalog.
        let r = app.req_as(&worker, Method::GET, "/api/v1/projects").send().await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let r = app.req_as(&worker, Method::GET, "/api/v1/auth/validate").send().await.unwrap();
        assert_eq!(json(r).await["role"], "worker");
    }

    async fn keys_are_shown_once_hashed_revocable_and_expire(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let r = app.post("/api/v1/api-keys", json!({"name": "ci", "role": "member"})).await;
        assert_eq!(r.status(), 201);
        let created = json(r).await;
        let key = created["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("kby_") && key.len() >= 28, "{key}");
        assert_eq!(created["role"], "member");
        assert_eq!(created["prefix"], key[..12]);
        let id = created["id"].as_str().unwrap().to_string();

        // Listed and fetched without the secret; it is stored only as a hash.
        let list = json(app.get("/api/v1/api-keys").await).await;
        assert_eq!(list["total"], 2);
        assert!(!list.to_string().contains(&key));
        let one = json(app.get(&format!("/api/v1/api-keys/{id}")).await).await;
        assert!(one.get("key").is_none());
        assert!(one["revoked_at"].is_null());

        // The key works, and its use is recorded.
        assert_eq!(app.req_as(&key, Method::GET, "/api/v1/projects").send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let one = json(app.get(&format!("/api/v1/api-keys/{id}")).await).await;
        assert!(one["last_used_at"].is_string(), "{one}");

        // Revoked: 401 from then on, still listed with revoked_at.
        let r = app.req(Method::DELETE, &format!("/api/v1/api-keys/{id}")).send().await.unwrap();
        assert_eq!(json(r).await, json!({"id": id, "deleted": true}));
        let r = app.req_as(&key, Method::GET, "/api/v1/projects").send().await.unwrap();
        let err = assert_error(r, 401, "UNAUTHORIZED").await;
        assert!(err["message"].as_str().unwrap().contains("revoked"));
        let one = json(app.get(&format!("/api/v1/api-keys/{id}")).await).await;
        assert!(one["revoked_at"].is_string());

        // Expiry.
        let expires = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
        let created = json(app.post("/api/v1/api-keys", json!({"name": "short", "role": "viewer", "expires_at": expires})).await).await;
        let short = created["key"].as_str().unwrap().to_string();
        assert_eq!(app.req_as(&short, Method::GET, "/api/v1/projects").send().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let r = app.req_as(&short, Method::GET, "/api/v1/projects").send().await.unwrap();
        let err = assert_error(r, 401, "UNAUTHORIZED").await;
        assert!(err["message"].as_str().unwrap().contains("expired"));

        // Validation and the last admin key.
        let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        assert_error(app.post("/api/v1/api-keys", json!({"name": "x", "role": "admin", "expires_at": past})).await, 422, "VALIDATION_ERROR").await;
        assert_error(app.post("/api/v1/api-keys", json!({"name": "x", "role": "root"})).await, 422, "VALIDATION_ERROR").await;
        let me = json(app.get("/api/v1/auth/validate").await).await;
        let r = app.req(Method::DELETE, &format!("/api/v1/api-keys/{}", me["key_id"].as_str().unwrap())).send().await.unwrap();
        assert_error(r, 409, "CONFLICT").await;
        assert_error(app.get(&format!("/api/v1/api-keys/{}", uuid::Uuid::now_v7())).await, 404, "NOT_FOUND").await;
    }

    async fn concurrent_revocations_keep_one_admin_key(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let all = cp_types::page::PageRequest { limit: 500, offset: 0 };
        for _ in 0..5 {
            // Exactly two usable admin keys, each about to revoke the other at the same moment.
            let a = app.key("default", Role::Admin).await;
            let b = app.key("default", Role::Admin).await;
            let mut ids = Vec::new();
            for key in [&a, &b] {
                let who = json(app.req_as(key, Method::GET, "/api/v1/auth/validate").send().await.unwrap()).await;
                ids.push(who["key_id"].as_str().unwrap().to_string());
            }
            let (id_a, id_b) = (ids[0].clone(), ids[1].clone());
            for k in app.store.keys("default").list(all).await.unwrap().items {
                if k.role == Role::Admin && k.revoked_at.is_none() && k.id.to_string() != id_a && k.id.to_string() != id_b {
                    app.store.revoke_key_any_org(k.id).await.unwrap();
                }
            }
            let (x, y) = tokio::join!(
                app.req_as(&a, Method::DELETE, &format!("/api/v1/api-keys/{id_b}")).send(),
                app.req_as(&b, Method::DELETE, &format!("/api/v1/api-keys/{id_a}")).send(),
            );
            let mut codes = [x.unwrap().status().as_u16(), y.unwrap().status().as_u16()];
            codes.sort();
            // The loser is refused: 409 (the last admin key) or, when the winner's revocation
            // landed before the loser's key was checked, 401.
            assert_eq!(codes[0], 200);
            assert!(codes[1] == 409 || codes[1] == 401, "{codes:?}");
            let usable = app.store.keys("default").list(all).await.unwrap().items.iter()
                .filter(|k| k.role == Role::Admin && k.revoked_at.is_none()).count();
            assert_eq!(usable, 1, "the organization keeps exactly one admin key");
        }
    }

    async fn organizations_never_see_each_other(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let b = app.org_with_key("org-b", Role::Admin).await;
        let a_project = json(app.post("/api/v1/projects", json!({"name": "Secret A", "key": "SECA"})).await).await;
        let a_env = json(app.post("/api/v1/environments", json!({"name": "a-only"})).await).await;
        let pid = a_project["id"].as_str().unwrap();
        let eid = a_env["id"].as_str().unwrap();
        let a_agent = app.insert_member_row("agents", "default", "a-agent").await;

        // B sees only its own rows, and its totals count only them.
        let list = json(app.req_as(&b, Method::GET, "/api/v1/projects").send().await.unwrap()).await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["key"], "DEFAULT");
        assert_eq!(list["items"][0]["organization_id"], "org-b");
        let envs = json(app.req_as(&b, Method::GET, "/api/v1/environments").send().await.unwrap()).await;
        assert_eq!(envs["total"], 1);
        let keys = json(app.req_as(&b, Method::GET, "/api/v1/api-keys").send().await.unwrap()).await;
        assert_eq!(keys["total"], 1);

        // A foreign id is exactly like a missing one: 404 for every verb.
        for (method, path) in [
            (Method::GET, format!("/api/v1/projects/{pid}")),
            (Method::PATCH, format!("/api/v1/projects/{pid}")),
            (Method::PUT, format!("/api/v1/projects/{pid}")),
            (Method::DELETE, format!("/api/v1/projects/{pid}")),
            (Method::GET, format!("/api/v1/projects/{pid}/agents")),
            (Method::GET, format!("/api/v1/environments/{eid}")),
            (Method::PATCH, format!("/api/v1/environments/{eid}")),
            (Method::DELETE, format!("/api/v1/environments/{eid}")),
            (Method::GET, format!("/api/v1/environments/{eid}/worker-command")),
        ] {
            let r = app.req_as(&b, method.clone(), &path).json(&json!({"name": "hijack"})).send().await.unwrap();
            assert_error(r, 404, "NOT_FOUND").await;
        }
        let a_key_id = json(app.get("/api/v1/auth/validate").await).await["key_id"].as_str().unwrap().to_string();
        let r = app.req_as(&b, Method::DELETE, &format!("/api/v1/api-keys/{a_key_id}")).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;
        // A's agent cannot be put into B's project.
        let b_default = json(app.req_as(&b, Method::GET, "/api/v1/projects/default").send().await.unwrap()).await;
        let r = app.req_as(&b, Method::POST, &format!("/api/v1/projects/{}/agents", b_default["id"].as_str().unwrap()))
            .json(&json!({"agent_id": a_agent})).send().await.unwrap();
        assert_error(r, 404, "NOT_FOUND").await;

        // Nothing changed on A's side, and names may repeat across organizations.
        let still = json(app.get(&format!("/api/v1/projects/{pid}")).await).await;
        assert_eq!(still["name"], "Secret A");
        let r = app.req_as(&b, Method::POST, "/api/v1/projects").json(&json!({"name": "Secret A", "key": "SECA"})).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }

    async fn standard_keys_get_100_requests_a_minute(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        fresh_window(20).await;
        for i in 1..=100u64 {
            let r = app.get("/api/v1/projects?limit=1").await;
            assert_eq!(r.status(), 200, "request {i}");
            assert_eq!(r.headers()["x-ratelimit-limit"], "100");
            assert_eq!(r.headers()["x-ratelimit-remaining"].to_str().unwrap(), (100 - i).to_string());
            let reset: u64 = r.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
            assert_eq!(reset % 60, 0, "windows are aligned to the UTC minute");
        }
        let r = app.get("/api/v1/projects?limit=1").await;
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        assert!(r.headers().get("x-ratelimit-reset").is_some());
        assert_error(r, 429, "RATE_LIMITED").await;
        // Another key of the same org has its own budget; health is never limited.
        let other = app.key("default", Role::Viewer).await;
        assert_eq!(app.req_as(&other, Method::GET, "/api/v1/projects").send().await.unwrap().status(), 200);
        assert_eq!(app.anon(Method::GET, "/api/health").send().await.unwrap().status(), 200);
    }

    async fn enterprise_and_worker_tiers_have_their_own_limits(backend: Backend) {
        let app = TestApp::spawn_with(backend, |c| c.worker_rate_limit = 150).await;
        fresh_window(25).await;
        let r = app.req(Method::PATCH, "/api/v1/organization/settings")
            .json(&json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 130})).send().await.unwrap();
        let settings = json(r).await;
        assert_eq!(settings["rate_limit_tier"], "enterprise");
        assert_eq!(settings["rate_limit_per_minute"], 130);
        let fresh = app.key("default", Role::Member).await;
        for i in 1..=130 {
            let r = app.req_as(&fresh, Method::GET, "/api/v1/projects?limit=1").send().await.unwrap();
            assert_eq!(r.status(), 200, "request {i}");
            assert_eq!(r.headers()["x-ratelimit-limit"], "130");
        }
        assert_error(app.req_as(&fresh, Method::GET, "/api/v1/projects").send().await.unwrap(), 429, "RATE_LIMITED").await;

        // Worker keys are metered on their own, higher limit, whatever the org tier.
        let worker = app.key("default", Role::Worker).await;
        for i in 1..=150 {
            let r = app.req_as(&worker, Method::GET, "/api/v1/auth/validate").send().await.unwrap();
            assert_eq!(r.status(), 200, "worker request {i}");
            assert_eq!(r.headers()["x-ratelimit-limit"], "150");
        }
        assert_error(app.req_as(&worker, Method::GET, "/api/v1/auth/validate").send().await.unwrap(), 429, "RATE_LIMITED").await;

        // Requests without a valid key are metered per client address at the standard limit.
        for _ in 0..100 {
            let r = app.anon(Method::GET, "/api/v1/projects").send().await.unwrap();
            assert_eq!(r.status(), 401);
        }
        assert_error(app.anon(Method::GET, "/api/v1/projects").send().await.unwrap(), 429, "RATE_LIMITED").await;
    }

    async fn organization_settings_are_validated_and_persisted(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let s = json(app.get("/api/v1/organization/settings").await).await;
        assert_eq!(s["rate_limit_tier"], "standard");
        assert_eq!(s["rate_limit_per_minute"], 100);
        assert_eq!(s["policy_enforcement"], "blocking");
        assert_eq!(s["webhook_allow_private_targets"], false);
        assert!(s["event_retention_days"].is_i64());
        let r = app.req(Method::PATCH, "/api/v1/organization/settings")
            .json(&json!({"policy_enforcement": "monitoring", "webhook_allow_private_targets": true, "event_retention_days": 7}))
            .send().await.unwrap();
        let s = json(r).await;
        assert_eq!(s["policy_enforcement"], "monitoring");
        assert_eq!(s["webhook_allow_private_targets"], true);
        assert_eq!(s["event_retention_days"], 7);
        assert_eq!(s["rate_limit_tier"], "standard", "untouched");
        for bad in [json!({"policy_enforcement": "strict"}), json!({"rate_limit_per_minute": 0}), json!({"event_retention_days": "x"})] {
            let r = app.req(Method::PATCH, "/api/v1/organization/settings").json(&bad).send().await.unwrap();
            assert_error(r, 422, "VALIDATION_ERROR").await;
        }
        let s = json(app.get("/api/v1/organization/settings").await).await;
        assert_eq!(s["event_retention_days"], 7);
        let org = json(app.get("/api/v1/organization").await).await;
        assert_eq!(org["id"], "default");
    }
    async fn settings_that_open_the_host_are_the_operators(backend: Backend) {
        let app = TestApp::spawn_with(backend, |c| {
            c.allow_private_webhook_targets = false;
            c.max_org_rate_limit = 6000;
        })
        .await;
        let patch = |body: serde_json::Value| app.req(Method::PATCH, "/api/v1/organization/settings").json(&body).send();
        let r = patch(json!({"webhook_allow_private_targets": true})).await.unwrap();
        let err = json(r).await;
        assert_eq!(err["error"]["code"], "FORBIDDEN", "{err}");
        assert!(err["error"]["message"].as_str().unwrap().contains("--allow-private-webhook-targets"), "{err}");
        let r = patch(json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 6001})).await.unwrap();
        assert_error(r, 403, "FORBIDDEN").await;
        let s = json(patch(json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 6000, "webhook_allow_private_targets": false})).await.unwrap()).await;
        assert_eq!((s["rate_limit_per_minute"].as_i64(), s["webhook_allow_private_targets"].as_bool()), (Some(6000), Some(false)));
        // A limit stored before the operator lowered the ceiling is held to it.
        let high = cp_types::org::UpdateOrgSettings { rate_limit_per_minute: Some(50_000), ..Default::default() };
        app.store.update_org_settings("default", &high).await.unwrap();
        let fresh = app.key("default", Role::Member).await;
        let r = app.req_as(&fresh, Method::GET, "/api/v1/projects").send().await.unwrap();
        assert_eq!(r.headers()["x-ratelimit-limit"], "6000");
        // A webhook to a loopback receiver stays refused even with the org's switch on in the database.
        let open = cp_types::org::UpdateOrgSettings { webhook_allow_private_targets: Some(true), ..Default::default() };
        app.store.update_org_settings("default", &open).await.unwrap();
        let r = app.post("/api/v1/webhooks", json!({"url": "http://127.0.0.1:9/hook", "events": ["execution.completed"]})).await;
        assert_error(r, 422, "VALIDATION_ERROR").await;
    }
}

/// Raw TCP connections that send part of a request's headers and stop.
async fn stalled(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        conns.push(c);
    }
    conns
}

/// Whether the server closed `c` (end of stream or reset) within `within`.
async fn closed_within(c: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or other answer before the close is fine; keep reading to the end.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn stalled_connections_are_dropped_and_capped() {
    let app = TestApp::spawn_with(crate::common::Backend::Sqlite, |c| {
        c.header_timeout = Duration::from_secs(1)
    })
    .await;
    let mut conns = stalled(app.addr, 3000).await;
    // The server keeps answering while 3,000 half-sent requests sit on it.
    let r = app.anon(Method::GET, "/api/health").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let started = std::time::Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(10)).await,
            "connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    // A kept-alive connection that sends nothing more is closed after the same delay.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "idle keep-alive connection left open"
    );

    // Past the cap, new connections are closed at once and old ones keep working.
    let capped = TestApp::spawn_with(crate::common::Backend::Sqlite, |c| {
        c.header_timeout = Duration::from_secs(30);
        c.max_connections = 20;
    })
    .await;
    let held = stalled(capped.addr, 20).await;
    let mut extra = tokio::net::TcpStream::connect(capped.addr).await.unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)).await,
        "a connection past the cap was served"
    );
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The slots come back as the server notices the closed connections.
        if let Ok(r) = capped.anon(Method::GET, "/api/health").send().await
            && r.status() == 200
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots were not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PostgreSQL: the replicas of one database share a key's window, so together they allow its
/// limit, not the limit each (at most a slice per replica less, never more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_a_key_s_rate_limit() {
    let app = TestApp::spawn(crate::common::Backend::Postgres).await;
    let other = app.replica().await;
    fresh_window(25).await;
    let r = app
        .req(Method::PATCH, "/api/v1/organization/settings")
        .json(&json!({"rate_limit_tier": "enterprise", "rate_limit_per_minute": 200}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let key = app.key("default", Role::Member).await;
    let mut allowed = 0;
    for i in 0..300 {
        let base = if i % 2 == 0 { &app.url } else { &other.url };
        let r = app
            .client
            .get(format!("{base}/api/v1/projects?limit=1"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => {}
            s => panic!("request {i}: {s}"),
        }
    }
    assert!(
        (190..=200).contains(&allowed),
        "{allowed} of 300 allowed by two replicas, limit 200"
    );
}
