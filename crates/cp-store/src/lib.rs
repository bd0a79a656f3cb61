//! The control plane's database: one repository API over SQLite (embedded default) and
//! PostgreSQL (production, several replicas).
//!
//! Statements are runtime-checked SQL text shared by both backends (both accept `$1`
//! placeholders and `RETURNING`); [`with_db!`] runs the same code against whichever pool is
//! configured. Every repository is obtained for one organization (`store.projects(org)`), so a
//! query that forgets the organization cannot be written through this API.

mod db;
mod error;
mod links;
mod page;
mod pg_conns;
mod sqlite_writer;

pub mod agents;
pub mod analytics;
pub mod context;
pub mod custom_integrations;
pub mod environments;
pub mod exec_env;
pub mod executions;
pub mod graph;
pub mod health;
pub mod idempotency;
pub mod integrations;
pub mod jobs;
pub mod keys;
pub mod knowledge;
pub mod master_key;
pub mod models;
pub mod orgs;
pub mod policies;
pub mod policy_associations;
pub mod policy_decisions;
pub mod projects;
pub mod rate_windows;
pub mod retention;
pub mod secrets;
pub mod signals;
pub mod skills;
pub mod task_plans;
pub mod teams;
mod versions;
pub mod webhooks;
pub mod worker_queues;
pub mod workers;
pub mod workflow_runs;
pub mod workflows;

pub use db::{Backend, Store};

/// Rows sqlx may buffer between its SQLite thread and the caller: more than the largest page.
const SQLITE_ROW_CHANNEL: usize = cp_types::page::MAX_LIMIT as usize + 16;
pub use error::{StoreError, StoreResult};
