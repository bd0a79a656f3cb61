//! Server configuration (the command line fills it in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The URL workers and clients use to reach this server (printed in worker commands).
    pub public_url: String,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Requests per minute of the standard tier, and of requests without a valid key.
    pub standard_rate_limit: u64,
    /// Requests per minute of a worker-role key.
    pub worker_rate_limit: u64,
    /// The 32-byte key that encrypts secrets at rest.
    pub master_key: [u8; 32],
    /// How often the reaper looks for silent workers and expired leases.
    pub reaper_interval: std::time::Duration,
    /// Milliseconds per second of a queue's heartbeat interval (1000; tests shrink it so a
    /// lost worker is noticed in a second rather than in 90).
    pub second_ms: i64,
    /// What one "second" of the webhook retry schedule lasts (tests shrink it).
    pub webhook_retry_unit: std::time::Duration,
    /// Whether this server sends webhooks (tests turn it off to hold deliveries back).
    pub webhook_sender: bool,
    /// The operator lets organizations send webhooks to private and loopback addresses (each
    /// organization still has to turn it on).
    pub allow_private_webhook_targets: bool,
    /// The planner and the knowledge embedder may call models whose `base_url` is a private or
    /// loopback address (a local Ollama or vLLM); off, such a model plans with the heuristic
    /// and knowledge search stays full text.
    pub allow_private_model_urls: bool,
    /// The highest per-key rate limit (requests per minute) an organization may set.
    pub max_org_rate_limit: u64,
    /// How long a connection may take to send a request's headers, and to start the next
    /// request on a kept-alive connection.
    pub header_timeout: std::time::Duration,
    /// Connections served at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// How policy sandbox children are started and bounded: by default this executable's
    /// hidden `policy-sandbox` command (tests run another binary, see `kcp-policy-sandbox`).
    pub policy_sandbox: cp_policy::SandboxConfig,
    /// Requests per minute one job's inbound webhook path accepts.
    pub job_webhook_rate_limit: u64,
    /// The time the job scheduler reads (tests set it by hand).
    pub clock: Clock,
    /// Whether `serve` runs the job scheduler (tests that set the clock run its rounds
    /// themselves).
    pub job_scheduler: bool,
}

/// A clock: the system's, or one a test sets.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// A clock that shows `at` until it is set again.
    pub fn manual(at: DateTime<Utc>) -> Self {
        Clock(Some(Arc::new(AtomicI64::new(at.timestamp_millis()))))
    }

    /// Sets a manual clock (the system's ignores it).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(ms) = &self.0 {
            ms.store(at.timestamp_millis(), Ordering::SeqCst);
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Some(ms) => DateTime::from_timestamp_millis(ms.load(Ordering::SeqCst)).unwrap_or_default(),
            None => Utc::now(),
        }
    }
}

impl ServerConfig {
    /// Defaults for a server listening on `listen` (tests and embedding).
    pub fn new(listen: SocketAddr, master_key: [u8; 32]) -> Self {
        ServerConfig {
            listen,
            public_url: format!("http://{listen}"),
            body_limit: 1024 * 1024,
            standard_rate_limit: cp_types::org::STANDARD_RATE_LIMIT as u64,
            worker_rate_limit: 6000,
            master_key,
            reaper_interval: std::time::Duration::from_secs(1),
            second_ms: 1000,
            webhook_retry_unit: std::time::Duration::from_secs(1),
            webhook_sender: true,
            allow_private_webhook_targets: false,
            allow_private_model_urls: false,
            max_org_rate_limit: 6000,
            header_timeout: std::time::Duration::from_secs(10),
            max_connections: 10_000,
            policy_sandbox: cp_policy::SandboxConfig::current_exe(&["policy-sandbox"]),
            job_webhook_rate_limit: 120,
            clock: Clock::default(),
            job_scheduler: true,
        }
    }
}
