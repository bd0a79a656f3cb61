//! sqlx's own statement log, for the tests that bound what a request costs. It is
//! process-wide, so such a test runs [`alone`]: in a child process running nothing else.

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
        // sqlx's statements, and those of the store's SQLite writer thread.
        if matches!(event.metadata().target(), "sqlx::query" | "kubiya_cp::sqlite_writer") {
            let mut s = Statement(String::new());
            event.record(&mut s);
            LOG.lock().unwrap().push(s.0);
        }
    }
}

/// Whether the calling test (`module_path!()` and its name) should go on and count: in the
/// test run, it starts itself again in a child process, waits for it to pass and answers
/// false; in that child, it starts recording and answers true.
pub async fn alone(module: &str, test: &str) -> bool {
    let name = super::child::test_name(module, test);
    if super::child::role().as_deref() == Some("alone") {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Log)).unwrap();
        return true;
    }
    super::child::run(&name, "alone").await;
    false
}

/// The statements since the last call, without those of background work that lands in
/// whichever step is running: the notifications between replicas that PostgreSQL's publisher
/// sends, the workflow scheduler's look for due runs and its sweep, and the job scheduler's
/// looks for due jobs and waiting or ended firings.
pub fn take() -> Vec<String> {
    let mut taken = std::mem::take(&mut *LOG.lock().unwrap());
    taken.retain(|s| {
        !s.contains("pg_notify")
            && !s.contains("FROM workflow_wakeups w")
            && !s.contains("JOIN workflow_runs r ON")
            && !s.contains("FROM job_firings WHERE")
            && !s.contains("FROM jobs WHERE enabled")
    });
    taken
}
