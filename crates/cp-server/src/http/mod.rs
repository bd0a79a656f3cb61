//! Cross-cutting HTTP concerns: the error envelope, request ids, authentication, rate limits,
//! idempotency, metrics and the extractors that turn bad input into envelope errors.

pub mod auth;
pub mod connections;
pub mod context;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod rate_limit;
pub mod session;

pub use auth::{Admin, Auth, Enforcer, Read, WorkerApi, Write};
pub use extract::{JsonBody, Pagination, Path, Query};
