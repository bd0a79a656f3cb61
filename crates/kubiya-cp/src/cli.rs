//! The command line: flags, each with its environment variable (DESIGN §1).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cp_types::org::Role;

#[derive(Parser)]
#[command(
    name = "kubiya-cp",
    version,
    about = "Kubiya control plane: API server, worker and administration"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after the subcommand.
#[derive(Args, Clone)]
pub struct Global {
    /// Folder for the SQLite database, the master key and the bootstrap admin key.
    #[arg(long, global = true, env = "KUBIYA_CP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…` (default: sqlite://<data-dir>/control-plane.db).
    #[arg(long, global = true, env = "KUBIYA_CP_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Log format: `text` for terminals, `json` for collectors.
    #[arg(
        long,
        global = true,
        env = "KUBIYA_CP_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl Global {
    /// The database URL: `--database-url`, else `DATABASE_URL`, else SQLite in the data dir.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| cp_store::Store::sqlite_url(&self.data_dir))
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the API server (migrations run at start).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Delete now what is past its retention (events of ended runs, policy decisions and
    /// webhook deliveries older than each organization's `event_retention_days`, idempotency
    /// records older than 24 h), in small batches; `serve` does this every ten minutes.
    Sweep,
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a worker: take executions from a worker queue and run their agents.
    Worker(WorkerArgs),
    /// Start a release server and measure it (requests/s, p50, p99).
    Bench(BenchArgs),
    /// Claude Code's PreToolUse hook, run by the worker's claude_code runtime: asks the worker
    /// whether a tool use may run (exit code 2 and the reason on stderr when it may not).
    #[command(hide = true)]
    ClaudeHook,
    /// Re-seal every secret with a new master key (in one transaction) and replace the key file.
    RotateMasterKey(MasterKeyArgs),
    /// A policy sandbox child: the server starts these to compile and evaluate Rego within
    /// memory and time limits (the protocol is on stdin and stdout).
    #[command(hide = true)]
    PolicySandbox,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The worker queue to take executions from.
    #[arg(long, env = "QUEUE_ID")]
    pub queue_id: uuid::Uuid,
    /// A worker-role key of the queue's organization; set KUBIYA_API_KEY (a flag's value is
    /// visible to every process of the host, so the flag is hidden).
    #[arg(long, env = "KUBIYA_API_KEY", hide_env_values = true, hide = true)]
    pub api_key: Option<String>,
    #[arg(long, env = "KUBIYA_CONTROL_PLANE_URL", default_value = "http://127.0.0.1:8001")]
    pub control_plane_url: String,
    /// Executions run at once.
    #[arg(long, env = "KUBIYA_WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Name of this worker in `GET /runners` (default: the host name).
    #[arg(long, env = "KUBIYA_RUNNER_NAME")]
    pub runner_name: Option<String>,
    /// Seconds runs get to finish on shutdown before they are handed back to the queue.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    /// Let the http tool reach loopback, private and link-local addresses (cloud metadata
    /// included); refused by default.
    #[arg(long, env = "KUBIYA_WORKER_ALLOW_PRIVATE_HTTP")]
    pub allow_private_http: bool,
    /// Run shell and claude_code processes without their sandbox (new PID and mount
    /// namespaces) on hosts that cannot create namespaces; they can then read the worker.
    #[arg(long, env = "KUBIYA_WORKER_UNSANDBOXED_TOOLS")]
    pub unsandboxed_tools: bool,
}

/// Where the master key that seals secrets at rest comes from.
#[derive(Args)]
pub struct MasterKeyArgs {
    /// File holding the 32-byte master key (hex, mode 0600); created only for a database
    /// that holds nothing sealed yet.
    #[arg(long, env = "KUBIYA_CP_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself (64 hex characters); wins over the file.
    #[arg(long, env = "KUBIYA_CP_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "KUBIYA_CP_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// URL that workers and clients use to reach this server (default: http://<listen>).
    #[arg(long, env = "KUBIYA_CP_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub key: MasterKeyArgs,
    /// First admin key of org `default` on an empty database (`kby_` and 24+ URL-safe characters).
    #[arg(long, env = "KUBIYA_CP_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "KUBIYA_CP_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Requests per minute allowed to each worker-role key.
    #[arg(long, env = "KUBIYA_CP_WORKER_RATE_LIMIT", default_value_t = 6000)]
    pub worker_rate_limit: u64,
    /// The highest per-key rate limit (requests per minute) an organization admin may set.
    #[arg(long, env = "KUBIYA_CP_MAX_ORG_RATE_LIMIT", default_value_t = 6000)]
    pub max_org_rate_limit: u64,
    /// Signed requests per minute one job's inbound webhook path accepts.
    #[arg(long, env = "KUBIYA_CP_JOB_WEBHOOK_RATE_LIMIT", default_value_t = 120)]
    pub job_webhook_rate_limit: u64,
    /// Let organizations that turn on `webhook_allow_private_targets` send webhooks to
    /// private, loopback and link-local addresses (off: no organization can).
    #[arg(long, env = "KUBIYA_CP_ALLOW_PRIVATE_WEBHOOK_TARGETS")]
    pub allow_private_webhook_targets: bool,
    /// Let the task planner and the knowledge embedder call models whose `base_url` is a
    /// private or loopback address (a local Ollama or vLLM); off, such a model plans with the
    /// heuristic and knowledge search stays full text.
    #[arg(long, env = "KUBIYA_CP_ALLOW_PRIVATE_MODEL_URLS")]
    pub allow_private_model_urls: bool,
    /// Seconds a connection has to send a request's headers (and to start its next request).
    #[arg(long, env = "KUBIYA_CP_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Connections served at once; new ones past it are closed (and logged).
    #[arg(long, env = "KUBIYA_CP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Address space of each policy sandbox child, in MiB: a policy that needs more is refused
    /// (at create) or denied (at evaluation).
    #[arg(long, env = "KUBIYA_CP_POLICY_MEMORY_MIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(64..=65536))]
    pub policy_memory_mib: u64,
}

#[derive(Subcommand)]
pub enum OrgsCommand {
    /// Create an organization (with its DEFAULT project and default environment).
    Create {
        /// The slug, `[a-z0-9-]{2,63}`; it is also the organization id.
        slug: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print only the key on stdout.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List keys (never their secrets).
    List {
        /// Only this organization's keys.
        #[arg(long)]
        org: Option<String>,
    },
    /// Revoke a key by id.
    Revoke { id: uuid::Uuid },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

#[derive(Args)]
pub struct BenchArgs {
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measure a server that is already running here instead of starting one.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin key for `--url`.
    #[arg(long, env = "KUBIYA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Database of the server the bench starts (default: a fresh SQLite file); use an empty
    /// PostgreSQL database or schema to measure PostgreSQL.
    #[arg(long)]
    pub server_database_url: Option<String>,
    /// Run one part only: the HTTP lists, policy decisions (through the policy sandbox, no
    /// server), executions, one execution followed by 1,000 SSE clients, workflows, jobs, task
    /// planning against a fake model (a server at `--url` needs `--allow-private-model-urls`),
    /// knowledge search and graph queries over 100,000 items, nodes and 300,000 relationships,
    /// or the dashboard's pages over 1,000 agents and 10,000 executions.
    #[arg(long, value_enum)]
    pub only: Option<BenchPart>,
}

/// The parts of `kubiya-cp bench`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchPart {
    Lists,
    Policy,
    Executions,
    Streams,
    Workflows,
    Jobs,
    Planning,
    Knowledge,
    Dashboard,
}

pub fn init_logging(global: &Global) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KUBIYA_CP_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
