//! Shared state of the HTTP server.

use std::sync::Arc;
use std::time::Instant;

use cp_store::Store;

use crate::config::ServerConfig;
use crate::http::rate_limit::RateLimiter;
use crate::services::hub::Hub;
use crate::services::keys::KeyCache;
use crate::services::list_cache::ListCache;
use crate::services::policy::PolicyEngine;
use crate::services::run_context::RunContextCache;
use crate::services::webhooks::WebhookSender;

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    pub limiter: Arc<RateLimiter>,
    pub keys: Arc<KeyCache>,
    pub lists: Arc<ListCache>,
    /// The task planner's copy of each organization's agents and teams.
    pub planner_catalogs: Arc<crate::services::planner::catalog::CatalogCache>,
    pub hub: Arc<Hub>,
    pub policies: Arc<PolicyEngine>,
    pub run_contexts: Arc<RunContextCache>,
    pub webhooks: Arc<WebhookSender>,
    pub workflow_scheduler: Arc<crate::services::workflow_runs::Scheduler>,
    /// Rung when a job was written, so its schedule is read at once.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// Permits of the graph queries running at once: each holds a connection up to 5 s.
    pub graph_queries: Arc<tokio::sync::Semaphore>,
    /// When this server last started refreshing the graph's statistics (Unix ms), and how many
    /// refreshes it finished.
    pub graph_analyzed_at: Arc<std::sync::atomic::AtomicI64>,
    pub graph_analyses: Arc<tokio::sync::watch::Sender<u64>>,
    /// Each organization's reached embedding model, and the embedder's bell.
    pub embedders: Arc<crate::services::knowledge::embeddings::Embedders>,
    /// The dashboard's usage figures, a few seconds old at most.
    pub usage: Arc<crate::services::usage_cache::UsageCache>,
    pub started_at: Instant,
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> Self {
        let policies = Arc::new(PolicyEngine::new(config.policy_sandbox.clone()));
        let graph_queries = match store.backend() {
            cp_store::Backend::Sqlite => 2,
            cp_store::Backend::Postgres => 8,
        };
        AppState {
            store: store.with_second_ms(config.second_ms),
            config: Arc::new(config),
            limiter: Arc::default(),
            keys: Arc::default(),
            lists: Arc::default(),
            planner_catalogs: Arc::default(),
            hub: Arc::default(),
            policies,
            run_contexts: Arc::default(),
            webhooks: Arc::default(),
            workflow_scheduler: Arc::default(),
            jobs_wake: Arc::default(),
            graph_queries: Arc::new(tokio::sync::Semaphore::new(graph_queries)),
            graph_analyzed_at: Arc::default(),
            graph_analyses: Arc::new(tokio::sync::watch::channel(0).0),
            embedders: Arc::default(),
            usage: Arc::default(),
            started_at: Instant::now(),
        }
    }
}
