//! Embeddings of knowledge items. A background task embeds the items of every organization
//! with an enabled embedding model, in batches, through `cp-llm`; search asks the same model
//! for the query's vector (`knowledge::search` blends both ranks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cp_llm::{Client, LlmError, ModelConfig, Provider};
use cp_store::knowledge::{Space, ToEmbed};
use cp_types::Timestamp;
use cp_types::model::Model;
use cp_types::org::Role;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::services::caller::Caller;
use crate::services::error::ServiceResult;
use crate::services::model_client;
use crate::state::AppState;

/// Items per embeddings request: 64 texts of at most 6,000 characters stay under OpenAI's
/// 300,000 tokens per request (a larger request refused as such is split).
const BATCH: i64 = 64;
/// Characters of an item embedded: its title, tags and the start of its content.
const EMBED_CHARS: usize = 6000;
/// Characters embedded for an item the model refused whole.
const OPENING_CHARS: usize = 500;
/// Time an organization's round may take before the others get their turn.
const ROUND_BUDGET: Duration = Duration::from_secs(60);
/// Organizations embedded side by side: a slow provider holds only its own.
const PARALLEL_ORGS: usize = 4;
/// Longest a batch (with its retries) or a query's embedding may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(180);
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// After a query's embedding failed, searches of the organization skip the model this long
/// rather than each waiting for it.
const QUIET: Duration = Duration::from_secs(30);
/// How long the task waits after a write for the ones that follow it.
const SETTLE: Duration = Duration::from_millis(250);
/// How long an organization's reached model is kept: opening its key is a logged vault read,
/// which a search must not cost each time.
const KEPT: Duration = Duration::from_secs(60);
/// The first and the longest wait after an organization's embedding failed.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const LONGEST_BACKOFF: Duration = Duration::from_secs(600);

/// The space a model's vectors live in: what makes them, not the key that pays for them.
pub fn space_of(model: &Model) -> Space {
    let provider = Provider::for_name(&model.provider);
    let base = model.base_url.as_deref().unwrap_or(provider.default_base_url());
    Space {
        model_id: model.id,
        name: format!(
            "{}|{}|{}",
            model.provider,
            base.trim_end_matches('/'),
            model.provider_model_name()
        ),
    }
}

/// An organization's embedding model, reached from the server.
pub struct Embedder {
    pub model: Model,
    pub space: Space,
    config: ModelConfig,
    http: reqwest::Client,
    /// Until when searches skip the model after a failure, and why.
    quiet: Mutex<Option<(Instant, &'static str)>>,
}

impl Embedder {
    fn client(&self, retries: u32, idle: Duration, most_bytes: usize) -> Client {
        let mut config = self.config.clone();
        config.max_retries = retries;
        config.idle_timeout = idle;
        config.max_response_bytes = most_bytes;
        Client::with_http(config, self.http.clone())
    }

    /// The query's vector, or why there is none (in our words: a provider's message may quote
    /// the key).
    pub async fn embed_query(&self, text: &str) -> Result<Vec<f32>, &'static str> {
        if let Some((until, why)) = *self.quiet.lock().unwrap_or_else(|p| p.into_inner())
            && Instant::now() < until
        {
            return Err(why);
        }
        let client = self.client(0, QUERY_TIMEOUT, 1 << 20);
        let why = match tokio::time::timeout(QUERY_TIMEOUT, client.embed(&[text.to_string()])).await {
            Ok(Ok(mut got)) => return Ok(got.vectors.pop().unwrap_or_default()),
            Ok(Err(e)) => failure_reason(&e),
            Err(_) => "the provider did not answer in time",
        };
        tracing::warn!(org = %self.model.organization_id, model = %self.model.value, why, "cannot embed a knowledge search");
        *self.quiet.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now() + QUIET, why));
        Err(why)
    }
}

/// Each organization's reached embedding model (with the model version it was reached for),
/// the organizations whose items or model changed, the background task's bell, and how many
/// passes it has finished (what a caller waits on to see its work done).
pub struct Embedders {
    kept: Mutex<HashMap<String, Kept>>,
    changed: Mutex<HashSet<String>>,
    wake: Notify,
    passes: watch::Sender<u64>,
}

impl Default for Embedders {
    fn default() -> Self {
        Embedders {
            kept: Mutex::default(),
            changed: Mutex::default(),
            wake: Notify::new(),
            passes: watch::channel(0).0,
        }
    }
}

struct Kept {
    model: (Uuid, Timestamp),
    at: Instant,
    embedder: Arc<Embedder>,
}

impl Embedders {
    /// Tells the background task that `org`'s items or models changed.
    pub fn wake(&self, org: &str) {
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org.to_string());
        self.wake.notify_one();
    }

    /// Changes each time the background task finishes a pass over the organizations due.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.subscribe()
    }

    fn take_changed(&self) -> HashSet<String> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|p| p.into_inner()))
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
            Arc::new(Embedder {
                space: space_of(&model),
                config: reach.config,
                http: reach.http,
                model: model.clone(),
                quiet: Mutex::new(None),
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

/// The background task: embeds what waits in the organizations whose items or models changed,
/// at once (after [`SETTLE`]), and in every organization with an embedding model at least
/// every `every`.
pub async fn run(state: AppState, every: Duration) {
    let mut failed: HashMap<String, Failure> = HashMap::new();
    let mut sweep_at = Instant::now();
    // Organizations with items still waiting after their round's budget.
    let mut more: HashSet<String> = HashSet::new();
    loop {
        let sweep = Instant::now() >= sweep_at;
        if sweep {
            sweep_at = Instant::now() + every;
        }
        let changed = state.embedders.take_changed();
        let orgs = match state.store.orgs_with_embedding_models().await {
            Ok(orgs) => orgs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the organizations with embedding models");
                Vec::new()
            }
        };
        failed.retain(|org, _| orgs.contains(org));
        let waiting = std::mem::take(&mut more);
        let mut due = orgs
            .into_iter()
            .filter(|o| sweep || changed.contains(o) || waiting.contains(o));
        let mut rounds = JoinSet::new();
        loop {
            while rounds.len() < PARALLEL_ORGS
                && let Some(org) = due.next()
            {
                let state = state.clone();
                let held = failed.get(&org).map(|f| (f.model, f.until));
                rounds.spawn(async move {
                    let round = embed_round(&state, &org, held).await;
                    (org, round)
                });
            }
            let Some(done) = rounds.join_next().await else {
                break;
            };
            match done {
                Ok((org, Round::Done)) => {
                    failed.remove(&org);
                }
                Ok((org, Round::More)) => {
                    failed.remove(&org);
                    more.insert(org);
                }
                Ok((_, Round::Waiting)) => {}
                Ok((org, Round::Failed(model, why))) => {
                    let wait = failed
                        .get(&org)
                        .filter(|f| f.model == model)
                        .map_or(FIRST_BACKOFF, |f| (f.wait * 2).min(LONGEST_BACKOFF));
                    tracing::warn!(org, why, ?wait, "cannot embed knowledge items");
                    let until = Instant::now() + wait;
                    failed.insert(org, Failure { model, until, wait });
                }
                Err(e) => tracing::error!(error = %e, "an embedding round ended abnormally"),
            }
        }
        state.embedders.passes.send_modify(|n| *n += 1);
        if more.is_empty() {
            let rest = sweep_at.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(rest, state.embedders.wake.notified()).await;
            tokio::time::sleep(SETTLE).await;
        }
    }
}

/// An organization's last failure: for which model version, and until when it rests.
struct Failure {
    model: (Uuid, Timestamp),
    until: Instant,
    wait: Duration,
}

enum Round {
    /// Nothing waits any more.
    Done,
    /// Items still wait after the round's budget.
    More,
    /// Resting after a failure.
    Waiting,
    Failed((Uuid, Timestamp), String),
}

/// Embeds the organization's waiting items for up to [`ROUND_BUDGET`]. The model's key is
/// opened only when something waits.
async fn embed_round(state: &AppState, org: &str, held: Option<((Uuid, Timestamp), Instant)>) -> Round {
    let model = match state.store.models(org).embedding_model().await {
        Ok(Some(m)) => m,
        Ok(None) => return Round::Done,
        Err(e) => return Round::Failed(Default::default(), e.to_string()),
    };
    let version = (model.id, model.updated_at);
    if held.is_some_and(|(m, until)| m == version && Instant::now() < until) {
        return Round::Waiting;
    }
    let space = space_of(&model);
    let items = state.store.knowledge(org);
    let started = Instant::now();
    let mut reached: Option<Arc<Embedder>> = None;
    // Whether the model embedded anything this round: until it has, a refused request is the
    // model's fault, not an item's.
    let mut worked = false;
    let mut after = 0;
    loop {
        if started.elapsed() > ROUND_BUDGET {
            return Round::More;
        }
        let batch = match items.pending_embeddings(&space, after, BATCH, EMBED_CHARS as i64).await {
            Ok(b) if b.is_empty() => return Round::Done,
            Ok(b) => b,
            Err(e) => return Round::Failed(version, e.to_string()),
        };
        after = batch.last().map_or(after, |b| b.doc);
        let embedder = match &reached {
            Some(e) => e.clone(),
            None => match embedder(state, &background_caller(org)).await {
                Ok(Ok(e)) => reached.insert(e).clone(),
                Ok(Err(why)) => return Round::Failed(version, why),
                Err(e) => return Round::Failed(version, e.message),
            },
        };
        let (rows, failure) = embed_batch(&embedder, &batch, &mut worked).await;
        if let Err(e) = items.save_embeddings(&space, &rows).await {
            return Round::Failed(version, e.to_string());
        }
        if let Some(why) = failure {
            return Round::Failed(version, why.into());
        }
    }
}

/// Who the background task reads the model's key as, in the vault's access log.
fn background_caller(org: &str) -> Caller {
    Caller {
        key_id: Uuid::nil(),
        key_name: "knowledge embedder".into(),
        role: Role::Member,
        org_id: org.to_string(),
        org_name: org.to_string(),
        worker_queue_id: None,
    }
}

/// The vectors of `batch` (doc, revision, vector), and why the rest could not be embedded. A
/// request the provider refuses is split in halves down to single items, embedded by their
/// opening when refused whole. An item refused even so, when the model has shown it works,
/// gets an empty vector: found by its words alone until it is rewritten.
async fn embed_batch(
    embedder: &Embedder,
    batch: &[ToEmbed],
    worked: &mut bool,
) -> (Vec<(i64, i64, Vec<f32>)>, Option<&'static str>) {
    let client = embedder.client(2, Duration::from_secs(60), 32 << 20);
    let mut rows = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    let mut parts = vec![batch];
    while let Some(part) = parts.pop() {
        let inputs: Vec<String> = part.iter().map(|i| text_of(i, EMBED_CHARS)).collect();
        match tokio::time::timeout(BATCH_TIMEOUT, client.embed(&inputs)).await {
            Ok(Ok(got)) => {
                *worked = true;
                rows.extend(part.iter().zip(got.vectors).map(|(i, v)| (i.doc, i.revision, v)));
            }
            Ok(Err(LlmError::Request(_))) if part.len() > 1 => {
                let (first, second) = part.split_at(part.len() / 2);
                parts.push(second);
                parts.push(first);
            }
            Ok(Err(LlmError::Request(_))) if part.len() == 1 => {
                // Refused alone (too long for the model, say): its opening stands for it.
                let item = &part[0];
                let opening = [text_of(item, OPENING_CHARS)];
                match tokio::time::timeout(BATCH_TIMEOUT, client.embed(&opening)).await {
                    Ok(Ok(mut got)) => {
                        *worked = true;
                        rows.push((item.doc, item.revision, got.vectors.pop().unwrap_or_default()));
                    }
                    Ok(Err(LlmError::Request(_))) => refused.push(item),
                    Ok(Err(e)) => return (rows, Some(failure_reason(&e))),
                    Err(_) => return (rows, Some("the provider did not answer in time")),
                }
            }
            Ok(Err(e)) => return (rows, Some(failure_reason(&e))),
            Err(_) => return (rows, Some("the provider did not answer in time")),
        }
    }
    if !refused.is_empty() && !*worked {
        return (rows, Some("the provider refused the request"));
    }
    for item in refused {
        tracing::warn!(org = %embedder.model.organization_id, doc = item.doc,
            "the embedding model refused a knowledge item; it is found by its words alone");
        rows.push((item.doc, item.revision, Vec::new()));
    }
    (rows, None)
}

/// What an item is embedded from: its title, tags and the start of its content, at most
/// `most` characters.
fn text_of(item: &ToEmbed, most: usize) -> String {
    let mut text = item.title.clone();
    if !item.tags.0.is_empty() {
        text.push_str("\nTags: ");
        text.push_str(&item.tags.0.join(", "));
    }
    text.push_str("\n\n");
    text.push_str(&item.content);
    match text.char_indices().nth(most) {
        Some((end, _)) => text[..end].to_string(),
        None => text,
    }
}
