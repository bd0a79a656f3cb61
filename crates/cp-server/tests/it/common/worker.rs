//! A worker speaking the HTTP worker protocol, for tests of the execution engine.

use reqwest::StatusCode;
use serde_json::{Value, json};

/// A registered worker. `url` may be changed (a restarted server listens elsewhere).
#[derive(Clone)]
pub struct TestWorker {
    pub url: String,
    pub key: String,
    pub id: String,
    pub client: reqwest::Client,
}

/// What a poll brought.
#[derive(Debug)]
pub enum Polled {
    Claim(Value),
    Cancel(Vec<String>),
    Drain,
    Nothing,
}

impl TestWorker {
    /// Registers on `queue` through `POST /worker-queues/{id}/start`.
    pub async fn start(url: &str, key: &str, queue: &str, hostname: &str) -> TestWorker {
        let client = reqwest::Client::new();
        let r = client
            .post(format!("{url}/api/v1/worker-queues/{queue}/start"))
            .bearer_auth(key)
            .json(&json!({"hostname": hostname, "version": "test", "capabilities": {"runtimes": ["default"], "max_concurrency": 4}}))
            .send()
            .await
            .expect("start");
        let status = r.status();
        let body: Value = r.json().await.expect("json");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        TestWorker {
            url: url.to_string(),
            key: key.to_string(),
            id: body["worker_id"].as_str().expect("worker_id").to_string(),
            client,
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url)).bearer_auth(&self.key)
    }

    pub async fn poll(&self, wait: f64) -> Polled {
        let r = self
            .post(&format!("/api/v1/workers/{}/poll?wait={wait}", self.id))
            .send()
            .await
            .expect("poll");
        match r.status() {
            StatusCode::NO_CONTENT => Polled::Nothing,
            StatusCode::OK => {
                let body: Value = r.json().await.expect("json");
                if !body["claim"].is_null() {
                    Polled::Claim(body["claim"].clone())
                } else if body["drain"] == true {
                    Polled::Drain
                } else {
                    let ids = body["cancel_execution_ids"]
                        .as_array()
                        .expect("ids")
                        .iter()
                        .map(|v| v.as_str().expect("id").to_string())
                        .collect();
                    Polled::Cancel(ids)
                }
            }
            other => panic!("poll answered {other}: {}", r.text().await.unwrap_or_default()),
        }
    }

    /// Polls until a claim arrives (or panics after `tries` empty polls).
    pub async fn claim(&self, tries: usize) -> Value {
        for _ in 0..tries {
            if let Polled::Claim(c) = self.poll(2.0).await {
                return c;
            }
        }
        panic!("no claim after {tries} polls");
    }

    pub async fn heartbeat(&self, current: &[&str]) -> reqwest::Response {
        self.post(&format!("/api/v1/workers/{}/heartbeat", self.id))
            .json(&json!({"status": "online", "current_executions": current}))
            .send()
            .await
            .expect("heartbeat")
    }

    pub async fn events(&self, claim: &Value, events: Value) -> reqwest::Response {
        self.post(&format!(
            "/api/v1/executions/{}/events",
            claim["execution"]["id"].as_str().unwrap()
        ))
        .header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
        .json(&json!({"events": events}))
        .send()
        .await
        .expect("events")
    }

    pub async fn complete(&self, claim: &Value, response: &str) -> reqwest::Response {
        self.post(&format!(
            "/api/v1/executions/{}/complete",
            claim["execution"]["id"].as_str().unwrap()
        ))
        .header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
        .json(
            &json!({"response": response, "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}),
        )
        .send()
        .await
        .expect("complete")
    }

    pub async fn fail(&self, claim: &Value, message: &str, retryable: bool) -> reqwest::Response {
        self.post(&format!(
            "/api/v1/executions/{}/fail",
            claim["execution"]["id"].as_str().unwrap()
        ))
        .header("X-Lease-Id", claim["lease_id"].as_str().unwrap())
        .json(&json!({"error_message": message, "retryable": retryable}))
        .send()
        .await
        .expect("fail")
    }

    pub async fn disconnect(&self) -> reqwest::Response {
        self.post(&format!("/api/v1/workers/{}/disconnect", self.id))
            .json(&json!({"reason": "test"}))
            .send()
            .await
            .expect("disconnect")
    }
}

/// Reads a whole SSE body into `(id, event, data)` triples (the stream must end).
pub async fn read_sse(resp: reqwest::Response) -> Vec<(i64, String, Value)> {
    let text = resp.text().await.expect("sse body");
    parse_sse(&text)
}

/// Parses SSE frames, skipping comments.
pub fn parse_sse(text: &str) -> Vec<(i64, String, Value)> {
    let mut out = Vec::new();
    for frame in text.split("\n\n") {
        let (mut id, mut event, mut data) = (None, None, None);
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<i64>().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data = serde_json::from_str(v.trim()).ok();
            }
        }
        if let (Some(id), Some(event)) = (id, event) {
            out.push((id, event, data.unwrap_or(Value::Null)));
        }
    }
    out
}
