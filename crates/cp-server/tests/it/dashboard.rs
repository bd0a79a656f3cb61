//! The web dashboard over HTTP (its browser tests are `scripts/ui-test.sh`): signing in, the
//! session cookie and what it may do, the security headers, and every page rendering for each
//! role, on both backends.

use crate::common::{TestApp, encode, json};
use cp_types::org::Role;
use reqwest::{Method, StatusCode, header};
use serde_json::json;

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Posts the sign-in form as a browser does, from `origin` (this server when `None`).
async fn sign_in(app: &TestApp, form: &[(&str, &str)], origin: Option<&str>) -> reqwest::Response {
    let origin = origin.unwrap_or(&app.url);
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    let mut req = browser()
        .post(format!("{}/sign-in", app.url))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.join("&"));
    if !origin.is_empty() {
        req = req.header(header::ORIGIN, origin);
    }
    req.send().await.unwrap()
}

fn cookie(key: &str) -> String {
    format!("kcp_session={key}")
}

async fn page(app: &TestApp, key: &str, path: &str) -> (StatusCode, String) {
    let r = browser()
        .get(format!("{}{path}", app.url))
        .header(header::COOKIE, cookie(key))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let csp = r
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = r.text().await.unwrap();
    if status == StatusCode::OK {
        let csp = csp.unwrap_or_else(|| panic!("{path} has no CSP"));
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_no_inline_script(path, &body);
    }
    (status, body)
}

/// Every script is a file of ours, and no element carries an event handler attribute.
fn assert_no_inline_script(path: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag_end = lower[i..].find('>').unwrap() + i;
        assert!(
            lower[i..tag_end].contains("src=\"/ui/assets/"),
            "{path}: inline script at {i}"
        );
    }
    for attr in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        " onchange=",
        "javascript:",
    ] {
        assert!(!lower.contains(attr), "{path}: {attr}");
    }
}

both_backends! {
    async fn signing_in_sets_a_session_cookie_the_pages_read(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;

        let r = browser().get(format!("{}/agents?status=idle", app.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/sign-in?next=/agents%3Fstatus%3Didle");
        let (status, form) = (r.status(), browser().get(format!("{}/sign-in", app.url)).send().await.unwrap());
        assert_eq!(status, 303);
        assert!(form.text().await.unwrap().contains("name=\"api_key\""));

        // Refused: an unknown key, a worker's key, a form posted from another site.
        let r = sign_in(&app, &[("api_key", "kby_not-a-key-at-all-0000000000")], None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().get(header::SET_COOKIE).is_none());
        let worker = app.key("default", Role::Worker).await;
        assert_eq!(sign_in(&app, &[("api_key", &worker)], None).await.status(), StatusCode::UNAUTHORIZED);
        for origin in ["https://evil.example", ""] {
            let r = sign_in(&app, &[("api_key", &app.admin_key)], Some(origin)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "from {origin:?}");
            assert!(r.headers().get(header::SET_COOKIE).is_none());
        }

        // Accepted: an HttpOnly, SameSite=Strict cookie, and back to a local page only.
        let origin = app.url.clone();
        let r = sign_in(&app, &[("api_key", &app.admin_key), ("next", "/executions")], Some(&origin)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/executions");
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(set.starts_with(&format!("kcp_session={};", app.admin_key)), "{set}");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
        let r = sign_in(&app, &[("api_key", &app.admin_key), ("next", "//evil.example/x")], None).await;
        assert_eq!(r.headers()[header::LOCATION], "/");

        let r = browser().post(format!("{}/sign-out", app.url)).header(header::COOKIE, cookie(&app.admin_key)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert!(r.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    }

    async fn a_cookie_session_changes_things_only_from_our_pages(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let client = browser();
        let call = |method: Method, path: &str| {
            client.request(method, format!("{}{path}", app.url)).header(header::COOKIE, cookie(&app.admin_key))
        };
        assert_eq!(call(Method::GET, "/api/v1/agents").send().await.unwrap().status(), 200);
        let body = json!({"name": "from-the-dashboard"});
        // A cross-site form or script: no X-Kcp-Ui header, or another Origin.
        let r = call(Method::POST, "/api/v1/agents").json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = call(Method::POST, "/api/v1/agents").header("x-kcp-ui", "1").header(header::ORIGIN, "https://evil.example")
            .json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let agents = json(app.get("/api/v1/agents").await).await;
        assert_eq!(agents["total"], 0, "nothing was created: {agents}");
        // The dashboard's own call.
        let r = call(Method::POST, "/api/v1/agents").header("x-kcp-ui", "1").header(header::ORIGIN, app.url.as_str())
            .json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        // A header key is not subject to any of this (API clients send no Origin or X-Kcp-Ui).
        assert_eq!(app.post("/api/v1/agents", json!({"name": "by-api"})).await.status(), 201);

        // A viewer's session reads, and is refused writes even from our pages.
        let viewer = app.key("default", Role::Viewer).await;
        let r = client.post(format!("{}/api/v1/agents", app.url)).header(header::COOKIE, cookie(&viewer))
            .header("x-kcp-ui", "1").json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    async fn every_page_renders_for_its_roles(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        app.unlimited().await;
        let env = json(app.get("/api/v1/environments").await).await["items"][0]["id"].as_str().unwrap().to_string();
        let queue = app.id_of(&format!("/api/v1/environments/{env}/worker-queues"), json!({"name": "dash-queue"})).await;
        let agent = app.id_of("/api/v1/agents", json!({"name": "dash <agent>", "description": "<script>alert(1)</script>"})).await;
        let team = app.id_of("/api/v1/teams", json!({"name": "dash-team", "configuration": {"member_ids": [agent]}})).await;
        let r = app.post(&format!("/api/v1/agents/{agent}/execute"), json!({"prompt": "hello <b>there</b>", "worker_queue_id": queue})).await;
        let execution = json(r).await["execution_id"].as_str().unwrap().to_string();

        let workflow = app.id_of("/api/v1/workflows", json!({"name": "ship <it>", "steps": [
            {"id": "build", "type": "command", "command": "echo built"},
            {"id": "approve", "type": "approval", "message": "Ship it?", "depends_on": ["build"]},
            {"id": "ship", "type": "command", "command": "echo shipped", "depends_on": ["approve"]},
        ]})).await;
        let r = app.post(&format!("/api/v1/workflows/{workflow}/start"), json!({"worker_queue_id": queue})).await;
        assert_eq!(r.status(), 201);
        let run = json(r).await["id"].as_str().unwrap().to_string();

        let job = app.id_of("/api/v1/jobs", json!({"name": "nightly", "trigger_type": "cron", "cron_schedule": "0 3 * * *",
            "entity_type": "agent", "entity_id": agent, "prompt_template": "report", "worker_queue_id": queue})).await;
        let r = app.post("/api/v1/tasks/plan", json!({"description": "Check the <b>cluster</b> and report"})).await;
        assert_eq!(r.status(), 201, "planned without a model, by the catalog");
        let plan = json(r).await["id"].as_str().unwrap().to_string();
        let policy = app.id_of("/api/v1/policies", json!({"name": "no-rm", "policy_content":
            "package kubiya.tools\n\ndefault allow := true\n\ndeny contains msg if {\n  input.tool_name == \"shell\"\n  msg := \"no\"\n}"})).await;
        crate::webhooks::allow_private(&app).await;
        let webhook = app.id_of("/api/v1/webhooks", json!({"url": "http://127.0.0.1:9/kcp", "events": ["*"]})).await;
        assert_eq!(app.post("/api/v1/secrets", json!({"name": "DB_PASSWORD", "value": "hunter2-secret-value"})).await.status(), 201);
        app.id_of("/api/v1/skills", json!({"name": "shell", "type": "shell", "configuration": {"allowed_commands": ["ls"]}})).await;

        let pages = [
            format!("/jobs/{job}"), "/jobs".into(), format!("/plans/{plan}"), "/plans".into(), "/environments".into(),
            "/policies".into(), "/policies?denied=true".into(), "/policies?denied=".into(), format!("/policies/{policy}"),
            "/webhooks".into(), format!("/webhooks/{webhook}"), "/secrets".into(), "/skills".into(),
            format!("/executions?worker_queue_id={queue}"),
            format!("/workflows/{workflow}"), format!("/workflow-runs/{run}"), "/workflows".into(),
            "/workflow-runs".into(), "/workflow-runs?status=".into(),
            "/".to_string(), "/usage".into(), "/usage?group_by=model&days=30".into(), "/usage?group_by=".into(),
            "/agents".into(), "/agents?status=".into(), "/agents?status=idle&page=2".into(), format!("/agents/{agent}"),
            "/teams".into(), format!("/teams/{team}"),
            "/executions".into(), "/executions?status=&execution_type=".into(), format!("/executions?entity_id={agent}"),
            format!("/executions/{execution}"),
        ];
        for path in &pages {
            let (status, body) = page(&app, &app.admin_key, path).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert!(!body.contains("<script>alert"), "{path} renders stored text as HTML");
        }
        let (_, agent_page) = page(&app, &app.admin_key, &format!("/agents/{agent}")).await;
        assert!(agent_page.contains("dash &lt;agent&gt;"), "escaped name");
        assert!(agent_page.contains(&format!("data-path=\"&#x2f;api&#x2f;v1&#x2f;agents&#x2f;{agent}&#x2f;execute\"")), "the execute form");
        assert!(agent_page.contains("hello &lt;b&gt;there&lt;&#x2f;b&gt;"), "the run is listed");
        let (_, run_page) = page(&app, &app.admin_key, &format!("/executions/{execution}")).await;
        assert!(run_page.contains(&format!("data-stream=\"/api/v1/executions/{execution}/stream\"")));
        assert!(run_page.contains("Cancel run"));

        let (_, secrets_page) = page(&app, &app.admin_key, "/secrets").await;
        assert!(secrets_page.contains("DB_PASSWORD") && !secrets_page.contains("hunter2"), "names only");
        let (status, keys_page) = page(&app, &app.admin_key, "/api-keys").await;
        assert_eq!(status, StatusCode::OK);
        assert!(keys_page.contains("this session") && !keys_page.contains(&app.admin_key), "no key is shown again");
        let (_, plan_page) = page(&app, &app.admin_key, &format!("/plans/{plan}")).await;
        assert!(plan_page.contains("<svg") && plan_page.contains("&lt;b&gt;cluster"), "the plan's graph, escaped");
        let (_, run_page) = page(&app, &app.admin_key, &format!("/workflow-runs/{run}")).await;
        assert!(run_page.contains("<svg") && run_page.contains("data-node=\"approve\"") && run_page.contains("ship"), "the graph");
        assert!(run_page.contains("data-refresh"), "a running run is redrawn");
        let (_, wf_page) = page(&app, &app.admin_key, &format!("/workflows/{workflow}")).await;
        assert!(wf_page.contains("ship &lt;it&gt;") && !wf_page.contains("ship <it>"), "escaped name");

        // A viewer sees the same pages without a form that changes anything.
        let viewer = app.key("default", Role::Viewer).await;
        for path in &pages {
            let (status, body) = page(&app, &viewer, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(!body.contains("data-api=\"POST\"") && !body.contains("data-api=\"PATCH\"") && !body.contains("data-api=\"DELETE\""),
                "{path} offers a viewer a change");
        }

        // API keys are an admin's page.
        let member = app.key("default", Role::Member).await;
        assert_eq!(page(&app, &member, "/api-keys").await.0, StatusCode::FORBIDDEN);
        assert_eq!(page(&app, &viewer, "/api-keys").await.0, StatusCode::FORBIDDEN);
        let (_, nav) = page(&app, &app.admin_key, "/").await;
        assert!(nav.contains("href=\"&#x2f;api-keys\""), "admins are");
        let (_, nav) = page(&app, &member, "/").await;
        assert!(!nav.contains("href=\"&#x2f;api-keys\""), "members are not offered the keys page");

        // Unknown and other organizations' ids are a 404 page; a bad filter a 422 page.
        let other = app.org_with_key("other", Role::Admin).await;
        for path in [format!("/agents/{agent}"), format!("/executions/{execution}"), format!("/teams/{team}"), format!("/jobs/{job}"),
            format!("/plans/{plan}"), format!("/policies/{policy}"), format!("/webhooks/{webhook}"), format!("/workflows/{workflow}"),
            format!("/workflow-runs/{run}")] {
            let (status, body) = page(&app, &other, &path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(body.contains("<h1>404 Not Found</h1>"), "{body}");
            assert!(!body.contains("dash"), "{path} leaks");
        }
        let (status, _) = page(&app, &app.admin_key, "/executions?status=bogus").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = page(&app, &app.admin_key, "/agents/not-a-uuid").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A worker key has no pages; a revoked key is sent to sign in.
        let worker = app.key("default", Role::Worker).await;
        assert_eq!(page(&app, &worker, "/agents").await.0, StatusCode::FORBIDDEN);
        let (status, _) = page(&app, "kby_revoked-or-unknown-000000000000", "/agents").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }

    async fn diagrams_are_drawn_as_svg(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let draw = |source: &str| {
            browser().post(format!("{}/ui/diagram", app.url)).header(header::COOKIE, cookie(&app.admin_key))
                .header("x-kcp-ui", "1").json(&json!({"source": source})).send()
        };
        let r = draw("graph TD\n  A[<img src=x onerror=alert(1)>] --> B{ok?}\n  B -->|yes| C").await.unwrap();
        assert_eq!(r.status(), 200);
        let svg = json(r).await["svg"].as_str().unwrap().to_owned();
        assert!(svg.starts_with("<svg") && svg.contains("&lt;img") && !svg.contains("<img"), "{svg}");
        let r = draw("sequenceDiagram\n User->>Agent: <b>deploy</b>?\n Agent-->>User: done").await.unwrap();
        assert_eq!(r.status(), 200);
        let svg = json(r).await["svg"].as_str().unwrap().to_owned();
        assert!(svg.contains("lifeline") && svg.contains("&lt;b&gt;deploy") && !svg.contains("<b>"), "{svg}");
        assert_eq!(draw("classDiagram\n A <|-- B").await.unwrap().status(), 422);
        // A viewer reads diagrams too (drawing changes nothing).
        let viewer = app.key("default", Role::Viewer).await;
        let r = browser().post(format!("{}/ui/diagram", app.url)).header(header::COOKIE, cookie(&viewer))
            .header("x-kcp-ui", "1").json(&json!({"source": "pie\n \"a\" : 1"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(draw(&"x".repeat(60_000)).await.unwrap().status(), 422);
        let r = browser().post(format!("{}/ui/diagram", app.url)).json(&json!({"source": "graph TD\n A"})).send().await.unwrap();
        assert_eq!(r.status(), 401, "no session, no drawing");
    }

    async fn assets_are_embedded_and_cached(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (_, html) = page(&app, &app.admin_key, "/").await;
        let start = html.find("/ui/assets/app.js?v=").unwrap();
        let src = &html[start..start + html[start..].find('"').unwrap()];
        let r = browser().get(format!("{}{src}", app.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert!(r.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        assert!(r.text().await.unwrap().contains("X-Kcp-Ui"));
        for asset in ["app.css", "icon.svg"] {
            assert_eq!(browser().get(format!("{}/ui/assets/{asset}", app.url)).send().await.unwrap().status(), 200);
        }
        assert_eq!(browser().get(format!("{}/ui/assets/../Cargo.toml", app.url)).send().await.unwrap().status(), 404);
    }
}
