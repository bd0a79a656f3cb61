//! Knowledge search with an embedding model, against a fake provider that speaks the
//! OpenAI-compatible embeddings format: items embedded in the background in batches, search
//! blending words and meaning, re-embedding after a write, organizations kept apart, and full
//! text (with the reason) when the model cannot be used.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use cp_types::org::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestApp, json};

/// Words of one meaning: a text's vector counts its words of each.
const MEANINGS: [&[&str]; 4] = [
    &["car", "automobile", "vehicle", "engine"],
    &["payments", "billing", "invoice", "invoices", "money"],
    &["database", "postgres", "replica", "sql"],
    &["food", "lunch", "soup", "bread"],
];

/// A request's `Authorization` header and `input` list.
type Request = (String, Vec<String>);

#[derive(Clone, Default)]
struct Provider {
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Provider {
    fn batches(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn vector(text: &str) -> Vec<f32> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .collect();
    MEANINGS
        .iter()
        .map(|m| words.iter().filter(|w| m.contains(&w.as_str())).count() as f32)
        .collect()
}

async fn embeddings(
    axum::extract::State(p): axum::extract::State<Provider>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap_or_default();
    p.requests.lock().unwrap().push((auth.clone(), inputs.clone()));
    if auth != "Bearer sk-embed" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": format!("Incorrect API key provided: {auth}")}})),
        )
            .into_response();
    }
    // As a provider refuses an input longer than the model's context: the whole request.
    if inputs
        .iter()
        .any(|t| t.contains("OVERSIZE") || t.contains("UNEMBEDDABLE"))
    {
        let error = json!({"error": {"message": "This model's maximum context length is 8192 tokens"}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 5, "total_tokens": 5}}))
        .into_response()
}

/// The fake provider on a loopback port: its OpenAI-style base URL.
async fn provider() -> (String, Provider) {
    let p = Provider::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, p)
}

async fn create(app: &TestApp, key: &str, title: &str, content: &str) -> String {
    let r = app
        .req_as(key, Method::POST, "/api/v1/knowledge")
        .json(&json!({"title": title, "content": content}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    json(r).await["id"].as_str().unwrap().to_string()
}

/// Stores the key and adds an embedding model on the fake provider.
async fn embedding_model(app: &TestApp, key: &str, url: &str, secret_value: &str) -> String {
    let r = app
        .req_as(key, Method::POST, "/api/v1/secrets")
        .json(&json!({"name": "EMBED_KEY", "value": secret_value}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .req_as(key, Method::POST, "/api/v1/models")
        .json(
            &json!({"value": "fake/embed-small", "label": "Embed", "provider": "openai", "model_type": "embedding",
                      "base_url": url, "api_key_secret": "EMBED_KEY"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    json(r).await["id"].as_str().unwrap().to_string()
}

async fn search(app: &TestApp, key: &str, q: &str) -> Value {
    let r = app
        .req_as(key, Method::GET, &format!("/api/v1/knowledge/search?q={q}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await
}

/// Searches until every item is embedded (hybrid, no note) and `done` holds, searching again
/// after each pass of the server's embedder.
async fn until_embedded(app: &TestApp, key: &str, q: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut passes = app.state.embedders.passes();
    loop {
        passes.mark_unchanged();
        let v = search(app, key, q).await;
        if v["mode"] == "hybrid" && v["note"].is_null() && done(&v) {
            return v;
        }
        let pass = tokio::time::timeout_at(deadline, passes.changed()).await;
        assert!(matches!(pass, Ok(Ok(()))), "not embedded in 30 s: {v}");
    }
}

fn ids(v: &Value) -> Vec<&str> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect()
}

both_backends! {
    async fn search_blends_words_and_meaning_once_items_are_embedded(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (url, fake) = provider().await;
        let me = app.key("default", Role::Admin).await;
        let automobile = create(&app, &me, "Automobile upkeep", "Change the engine oil every 10,000 km.").await;
        let billing = create(&app, &me, "Billing runbook", "Invoices go out on the first of the month.").await;
        let lunch = create(&app, &me, "Lunch menu", "Soup and bread.").await;

        let v = search(&app, &me, "car").await;
        assert_eq!((v["mode"].as_str(), v["count"].as_u64()), (Some("full_text"), Some(0)), "{v}");
        assert!(v["note"].as_str().unwrap().contains("no enabled embedding model"), "{v}");

        // Another organization with its own model and an item about cars.
        let stranger = app.org_with_key("other-org", Role::Admin).await;
        let fleet = create(&app, &stranger, "Vehicle fleet", "Every car of the fleet.").await;
        embedding_model(&app, &stranger, &url, "sk-embed").await;
        embedding_model(&app, &me, &url, "sk-embed").await;

        // "car" is in no item of ours: only meaning finds the automobile.
        let v = until_embedded(&app, &me, "car", |_| true).await;
        assert_eq!(ids(&v), [automobile.as_str()], "{v}");
        assert_eq!(v["items"][0]["score"], 1.0);
        assert_eq!(v["items"][0]["snippet"], "Change the engine oil every 10,000 km.", "its opening");
        let theirs = until_embedded(&app, &stranger, "car", |_| true).await;
        assert_eq!(ids(&theirs), [fleet.as_str()], "{theirs}");

        // Words and meaning together: the billing runbook holds both.
        let v = search(&app, &me, "invoice%20money").await;
        assert_eq!(ids(&v)[0], billing, "{v}");
        assert!(v["items"][0]["snippet"].as_str().unwrap().contains("**"), "matched words are marked: {v}");

        // The items were sent in one batch per organization, with the stored key.
        let batches = fake.batches();
        assert!(batches.iter().all(|(auth, _)| auth == "Bearer sk-embed"));
        assert!(batches.iter().any(|(_, inputs)| inputs.len() == 3), "{batches:?}");
        assert!(batches.iter().flat_map(|(_, i)| i).any(|t| t.starts_with("Lunch menu\n\nSoup and bread.")));

        // A written item waits for its new vector; it is never found by its old one.
        let r = app.req(Method::PATCH, &format!("/api/v1/knowledge/{automobile}"))
            .json(&json!({"title": "Kitchen notes", "content": "Today: soup."})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v = search(&app, &me, "car").await;
        assert!(!ids(&v).contains(&automobile.as_str()), "{v}");
        let v = until_embedded(&app, &me, "food", |v| v["count"] == 2).await;
        let mut found = ids(&v);
        found.sort();
        let mut wanted = vec![automobile.as_str(), lunch.as_str()];
        wanted.sort();
        assert_eq!(found, wanted, "{v}");
        // Source or project changes do not call for a new vector.
        let before = fake.batches().len();
        let r = app.req(Method::PATCH, &format!("/api/v1/knowledge/{automobile}"))
            .json(&json!({"source": "https://wiki/kitchen"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(search(&app, &me, "food").await["note"], Value::Null);
        let queries = fake.batches().len() - before;
        assert_eq!(queries, 1, "only the query was embedded");

        // A deleted item is gone from meaning too.
        let r = app.req(Method::DELETE, &format!("/api/v1/knowledge/{lunch}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(ids(&search(&app, &me, "food").await), [automobile.as_str()]);
    }

    async fn items_the_model_refuses_are_split_out_and_found_by_their_words(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (url, fake) = provider().await;
        let me = app.key("default", Role::Admin).await;
        for i in 0..5 {
            create(&app, &me, &format!("Engine note {i}"), "About the automobile.").await;
        }
        // Too long as a whole (the marker is past its opening), and refused however it is cut.
        let long = format!("A vehicle manual. {} OVERSIZE", "page ".repeat(200));
        let manual = create(&app, &me, "Huge vehicle manual", &long).await;
        let refused = create(&app, &me, "UNEMBEDDABLE notes", "Vehicle notes.").await;
        embedding_model(&app, &me, &url, "sk-embed").await;

        // Every item is settled: the manual by its opening, the refused one without a vector.
        let v = until_embedded(&app, &me, "car", |v| v["count"] == 6).await;
        assert!(ids(&v).contains(&manual.as_str()), "{v}");
        assert!(!ids(&v).contains(&refused.as_str()), "{v}");
        assert_eq!(ids(&search(&app, &me, "unembeddable").await), [refused.as_str()]);
        let batches = fake.batches();
        assert!(batches.iter().any(|(_, inputs)| inputs.len() == 7), "{batches:?}");
        assert!(batches.iter().any(|(_, inputs)| inputs.len() == 1 && inputs[0].contains("OVERSIZE")));

        // Rewritten, it is embedded again.
        let r = app.req(Method::PATCH, &format!("/api/v1/knowledge/{refused}"))
            .json(&json!({"title": "Plain notes"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v = until_embedded(&app, &me, "car", |v| v["count"] == 7).await;
        assert!(ids(&v).contains(&refused.as_str()), "{v}");
    }

    async fn search_says_why_it_is_full_text_when_the_model_cannot_be_used(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let (url, fake) = provider().await;
        let me = app.key("default", Role::Admin).await;
        create(&app, &me, "Payments database", "The payments database fails over to its replica.").await;
        let model = embedding_model(&app, &me, &url, "sk-wrong").await;

        // The provider refuses the key: the answer says so without its message (which quotes it).
        let v = search(&app, &me, "replica").await;
        assert_eq!((v["mode"].as_str(), v["count"].as_u64()), (Some("full_text"), Some(1)), "{v}");
        let note = v["note"].as_str().unwrap();
        assert!(note.contains("refused the API key"), "{v}");
        assert!(!v.to_string().contains("sk-wrong"), "{v}");

        // A key that is not stored.
        let r = app.req(Method::PATCH, &format!("/api/v1/models/{model}"))
            .json(&json!({"api_key_secret": "MISSING"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v = search(&app, &me, "replica").await;
        assert!(v["note"].as_str().unwrap().contains("'MISSING'"), "{v}");

        // A model nobody listens for.
        let r = app.req(Method::PATCH, &format!("/api/v1/models/{model}"))
            .json(&json!({"api_key_secret": "EMBED_KEY", "base_url": "http://127.0.0.1:9/v1"})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v = search(&app, &me, "replica").await;
        assert!(v["note"].as_str().unwrap().contains("cannot be reached"), "{v}");
        assert_eq!(v["count"], 1);

        // Disabled: as if there were none; enabled again with the right key, it is used.
        let r = app.req(Method::PATCH, &format!("/api/v1/models/{model}"))
            .json(&json!({"enabled": false, "base_url": url})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v = search(&app, &me, "replica").await;
        assert!(v["note"].as_str().unwrap().contains("no enabled embedding model"), "{v}");
        let r = app.req(Method::PUT, "/api/v1/secrets/EMBED_KEY")
            .json(&json!({"value": "sk-embed"})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let r = app.req(Method::PATCH, &format!("/api/v1/models/{model}"))
            .json(&json!({"enabled": true})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v = until_embedded(&app, &me, "sql", |v| v["count"] == 1).await;
        assert_eq!(v["items"][0]["title"], "Payments database");
        assert!(fake.batches().iter().any(|(auth, _)| auth == "Bearer sk-embed"));
    }
}
