//! Rules that sit between the handlers and the store and span several repositories:
//! catalog rules, cryptography, credential reads, execution-environment resolution, retention.

pub mod caller;
pub mod catalog;
pub mod crypto;
pub mod dispatch;
pub mod error;
pub mod exec_env;
pub mod graph;
pub mod hub;
pub mod job_schedule;
pub mod job_webhooks;
pub mod jobs;
pub mod keys;
pub mod knowledge;
pub mod list_cache;
pub mod model_client;
pub mod notify;
pub mod planner;
pub mod policy;
pub mod retention;
pub mod run_context;
pub mod stream;
pub mod templates;
pub mod usage_cache;
pub mod vault;
pub mod webhooks;
pub mod workers;
pub mod workflow_engine;
pub mod workflow_import;
pub mod workflow_runs;
pub mod workflows;
