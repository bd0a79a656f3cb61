//! Embeddings of knowledge items. A background task embeds the items of every organization
//! with an enabled embedding model, in batches, through `cp-llm`; search asks the same model
//! for the query's vector (`knowledge::search` blends both ranks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cp_llm::{Client, LlmError, ModelConfig};
use cp_store::knowledge::{Space, ToEmbed};
use cp_types::model::Model;
use cp_types::org::Role;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::services::caller::Caller;
use crate::services::error::ServiceResult;
use crate::services::model_client;
use crate::state::AppState;

/// Items per embeddings request: 64 of at most 8,000 characters stay under OpenAI's 300,000
/// tokens per request.
const BATCH: i64 = 64;
/// Batches per organization in one round, so that one large organization does not hold the
/// others back.
const BATCHES_PER_ROUND: usize = 20;
/// Characters of an item embedded: its title, tags and the start of its content (about 2,000
/// tokens, within every provider's input limit).
const EMBED_CHARS: i64 = 8000;
/// How long an organization's reached model is kept: opening its key is a logged vault read,
/// which a search must not cost each time.
const KEPT: Duration = Duration::from_secs(60);
/// The first and the longest wait after an organization's embedding failed.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const LONGEST_BACKOFF: Duration = Duration::from_secs(600);

/// An organization's embedding model, reached from the server.
pub struct Embedder {
    pub model: Model,
    pub space: Space,
    config: ModelConfig,
    http: reqwest::Client,
}

impl Embedder {
    /// A client that gives up after `retries` retries and `timeout` without an answer.
    pub fn client(&self, retries: u32, timeout: Duration) -> Client {
        let mut config = self.config.clone();
        config.max_retries = retries;
        config.idle_timeout = timeout;
        Client::with_http(config, self.http.clone())
    }
}

/// Each organization's reached embedding model, with the model version it was reached for,
/// and the background task's bell.
#[derive(Default)]
pub struct Embedders {
    kept: Mutex<HashMap<String, Kept>>,
    wake: Notify,
}

struct Kept {
    model: (Uuid, cp_types::Timestamp),
    at: Instant,
    embedder: Arc<Embedder>,
}

impl Embedders {
    /// Tells the background task that items or models changed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn kept(&self, org: &str, model: &Model) -> Option<Arc<Embedder>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(org)
            .filter(|k| k.model == (model.id, model.updated_at) && k.at.elapsed() < KEPT)
            .map(|k| k.embedder.clone())
    }

    fn keep(&self, org: &str, model: &Model, embedder: Arc<Embedder>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|_, k| k.at.elapsed() < KEPT);
        kept.insert(
            org.to_string(),
            Kept {
                model: (model.id, model.updated_at),
                at: Instant::now(),
                embedder,
            },
        );
    }
}

/// The organization's embedding model, reached, or why there is none to use.
pub async fn embedder(state: &AppState, caller: &Caller) -> ServiceResult<Result<Arc<Embedder>, String>> {
    let org = caller.org_id.as_str();
    let Some(model) = state.store.models(org).embedding_model().await? else {
        return Ok(Err("the organization has no enabled embedding model".into()));
    };
    if let Some(kept) = state.embedders.kept(org, &model) {
        return Ok(Ok(kept));
    }
    let embedder = model_client::reach(state, caller, &model, "embedding")
        .await?
        .map(|reach| {
            let space = Space {
                model_id: model.id,
                name: format!(
                    "{}|{}|{}",
                    model.provider,
                    reach.config.base_url,
                    model.provider_model_name()
                ),
            };
            Arc::new(Embedder {
                space,
                config: reach.config,
                http: reach.http,
                model: model.clone(),
            })
        });
    // Only a reached model is kept: a key stored a moment later must count at once.
    if let Ok(e) = &embedder {
        state.embedders.keep(org, &model, e.clone());
    }
    Ok(embedder)
}

/// Why a provider's failure left search on full text, in words that carry none of the
/// provider's own message (which may quote a key).
pub fn failure_reason(e: &LlmError) -> &'static str {
    match e {
        LlmError::Auth(_) => "the provider refused the API key",
        LlmError::Request(_) => "the provider refused the request",
        LlmError::Unavailable(_) => "the provider is unavailable",
        LlmError::Timeout(_) => "the provider did not answer in time",
        LlmError::Network(_) => "the provider cannot be reached",
        LlmError::Protocol(_) => "the provider answered in an unexpected format",
    }
}

/// The background task: embeds what waits in every organization with an embedding model,
/// when woken (an item or a model was written) and at least every `every`.
pub async fn run(state: AppState, every: Duration) {
    // Organizations whose embedding failed: not retried before the instant, unless their
    // model changed.
    let mut failed: HashMap<String, Failure> = HashMap::new();
    loop {
        let mut more = false;
        match state.store.orgs_with_embedding_models().await {
            Ok(orgs) => {
                failed.retain(|org, _| orgs.contains(org));
                for org in orgs {
                    match embed_round(&state, &org, failed.get(&org)).await {
                        Round::Done => {
                            failed.remove(&org);
                        }
                        Round::More => {
                            failed.remove(&org);
                            more = true;
                        }
                        Round::Waiting => {}
                        Round::Failed(model, why) => {
                            let wait = failed
                                .get(&org)
                                .map_or(FIRST_BACKOFF, |f| (f.wait * 2).min(LONGEST_BACKOFF));
                            tracing::warn!(org, why, ?wait, "cannot embed knowledge items");
                            failed.insert(
                                org,
                                Failure {
                                    model,
                                    until: Instant::now() + wait,
                                    wait,
                                },
                            );
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the organizations with embedding models"),
        }
        if !more {
            let _ = tokio::time::timeout(every, state.embedders.wake.notified()).await;
        }
    }
}

struct Failure {
    model: (Uuid, cp_types::Timestamp),
    until: Instant,
    wait: Duration,
}

enum Round {
    /// Nothing waits any more.
    Done,
    /// Items still wait after this round's batches.
    More,
    /// Backing off after a failure.
    Waiting,
    Failed((Uuid, cp_types::Timestamp), String),
}

/// Embeds up to [`BATCHES_PER_ROUND`] batches of the organization's waiting items.
async fn embed_round(state: &AppState, org: &str, failed: Option<&Failure>) -> Round {
    let caller = Caller {
        key_id: Uuid::nil(),
        key_name: "knowledge embedder".into(),
        role: Role::Member,
        org_id: org.to_string(),
        org_name: org.to_string(),
        worker_queue_id: None,
    };
    let model = match state.store.models(org).embedding_model().await {
        Ok(Some(m)) => m,
        Ok(None) => return Round::Done,
        Err(e) => return Round::Failed(Default::default(), e.to_string()),
    };
    let version = (model.id, model.updated_at);
    if failed.is_some_and(|f| f.model == version && Instant::now() < f.until) {
        return Round::Waiting;
    }
    let embedder = match embedder(state, &caller).await {
        Ok(Ok(e)) => e,
        Ok(Err(why)) => return Round::Failed(version, why),
        Err(e) => return Round::Failed(version, e.message),
    };
    let client = embedder.client(2, Duration::from_secs(60));
    let items = state.store.knowledge(org);
    let mut after = 0;
    for _ in 0..BATCHES_PER_ROUND {
        let batch = match items
            .pending_embeddings(&embedder.space, after, BATCH, EMBED_CHARS)
            .await
        {
            Ok(b) if b.is_empty() => return Round::Done,
            Ok(b) => b,
            Err(e) => return Round::Failed(version, e.to_string()),
        };
        after = batch.last().map_or(after, |b| b.doc);
        let inputs: Vec<String> = batch.iter().map(text_of).collect();
        let vectors = match client.embed(&inputs).await {
            Ok(got) => got.vectors,
            Err(e) => return Round::Failed(version, e.to_string()),
        };
        let rows: Vec<(i64, i64, Vec<f32>)> = batch.iter().zip(vectors).map(|(b, v)| (b.doc, b.revision, v)).collect();
        if let Err(e) = items.save_embeddings(&embedder.space, &rows).await {
            return Round::Failed(version, e.to_string());
        }
    }
    Round::More
}

/// What an item is embedded from: its title, tags and the start of its content.
fn text_of(item: &ToEmbed) -> String {
    let mut text = item.title.clone();
    if !item.tags.0.is_empty() {
        text.push_str("\nTags: ");
        text.push_str(&item.tags.0.join(", "));
    }
    text.push_str("\n\n");
    text.push_str(&item.content);
    text
}
