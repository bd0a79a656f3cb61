//! API types shared by the control plane server, the worker and the tests.
//!
//! Everything here is plain data: request and response bodies, enums with their
//! wire names, the error envelope and the pagination envelope. No IO happens here.

pub mod agent;
pub mod analytics;
pub mod bounded;
pub mod common;
pub mod context;
pub mod custom_integration;
pub mod environment;
pub mod error;
pub mod exec_env;
pub mod execution;
pub mod graph;
pub mod health;
pub mod ids;
pub mod integration;
pub mod job;
pub mod knowledge;
pub mod model;
pub mod org;
pub mod page;
pub mod plan;
pub mod policy;
pub mod project;
pub mod runtime;
pub mod secret;
pub mod skill;
pub mod team;
pub mod validate;
pub mod webhook;
pub mod worker;
pub mod worker_queue;
pub mod workflow;
pub mod workflow_run;

pub use common::{Deleted, Timestamp, now};
pub use error::{ErrorBody, ErrorCode, ErrorEnvelope, FieldIssue};
pub use page::{Page, PageParams};
