//! sqlx's own statement log, for the tests that bound what a request costs. It is
//! process-wide: a test binary that records it runs nothing else meanwhile.

use std::sync::Mutex;

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The statement's text, from the `db.statement` field of sqlx's event.
struct Statement(String);

impl Visit for Statement {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "db.statement" {
            self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "db.statement" {
            self.0 = value.to_string();
        }
    }
}

struct Log;

impl<S: Subscriber> Layer<S> for Log {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut s = Statement(String::new());
            event.record(&mut s);
            LOG.lock().unwrap().push(s.0);
        }
    }
}

/// Starts recording; once per test binary.
pub fn record() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Log)).unwrap();
}

/// The statements since the last call, without the notifications between replicas that
/// PostgreSQL's publisher sends in the background (they land in whichever step is running).
pub fn take() -> Vec<String> {
    let mut taken = std::mem::take(&mut *LOG.lock().unwrap());
    taken.retain(|s| !s.contains("pg_notify"));
    taken
}
