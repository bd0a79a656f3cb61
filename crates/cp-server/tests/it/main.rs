//! The server's integration tests, in one binary: each module is one area of the API, run
//! against a real server on loopback over SQLite and PostgreSQL (see `common`).

#[macro_use]
mod common;

mod analytics;
mod auth;
mod catalog;
mod context;
mod context_query_count;
mod conventions;
mod dashboard;
mod exec_query_count;
mod executions;
mod faults;
mod graph;
mod jobs;
mod knowledge;
mod knowledge_embeddings;
mod planning;
mod policies;
mod policy_enforcement;
mod policy_examples;
mod query_count;
mod resources;
mod secrets;
mod skills;
mod tool_runs;
mod webhooks;
mod workflows;
