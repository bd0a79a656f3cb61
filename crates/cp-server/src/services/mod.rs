//! Rules that sit between the handlers and the store and span several repositories:
//! catalog rules, cryptography, credential reads, execution-environment resolution, retention.

pub mod catalog;
pub mod crypto;
pub mod dispatch;
pub mod exec_env;
pub mod hub;
pub mod list_cache;
pub mod policy;
pub mod retention;
pub mod run_context;
pub mod vault;
pub mod webhooks;
