//! The control plane HTTP server: an axum app over [`cp_store::Store`].

pub mod config;
pub mod http;
pub mod routes;
pub mod services;
pub mod state;
pub mod ui;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::ServerConfig;
pub use routes::router;
pub use state::AppState;

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Replicas sharing PostgreSQL wake each other; a failure here only costs cross-replica
    // latency (pollers time out, followers re-read), so the server starts anyway.
    let bridge = match services::hub::bridge(state.store.clone(), state.hub.clone()).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(error = %e, "replica notifications unavailable");
            None
        }
    };
    let background = tokio::spawn(housekeeping(state.clone()));
    let reaper = tokio::spawn(services::dispatch::reaper(state.clone(), state.config.reaper_interval));
    // Ends of step executions on this replica wake it at once; the interval bounds how late a
    // timer (a backoff, a sleep, a timeout) or another replica's end is seen.
    let workflows = tokio::spawn(services::workflow_runs::scheduler(
        state.clone(),
        Duration::from_millis(250),
    ));
    // Schedules have a resolution of one second; a written job wakes it at once.
    let jobs = state
        .config
        .job_scheduler
        .then(|| tokio::spawn(services::jobs::scheduler(state.clone(), Duration::from_millis(500))));
    let webhooks = state
        .config
        .webhook_sender
        .then(|| tokio::spawn(services::webhooks::run(state.clone(), Duration::from_millis(500))));
    // Knowledge items are embedded in the background; a written item or model wakes it.
    let embedder = tokio::spawn(services::knowledge::embeddings::run(
        state.clone(),
        Duration::from_secs(60),
    ));
    let hub = state.hub.clone();
    let (policies, store) = (state.policies.clone(), state.store.clone());
    let shutdown = async move {
        shutdown.await;
        hub.close();
    };
    let limits = http::connections::ConnectionLimits {
        header_timeout: state.config.header_timeout,
        max_connections: http::connections::connection_cap(
            state.config.max_connections,
            http::connections::raise_file_limit(),
        ),
    };
    let app = router(state);
    release_startup_memory();
    let result = http::connections::serve(listener, app, limits, shutdown).await;
    background.abort();
    reaper.abort();
    workflows.abort();
    embedder.abort();
    if let Some(j) = jobs {
        j.abort();
    }
    if let Some(w) = webhooks {
        w.abort();
    }
    // Decisions made by the last requests are still on their way to the log.
    policies.flush_log(&store).await;
    if let Some(b) = bridge {
        b.abort();
    }
    result
}

/// Building the router (its OpenAPI document above all) peaks at about 10 MB that is freed at
/// once; glibc keeps freed heap for later, so it would stay in the idle server's RSS. It is
/// handed back to the system here.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Periodic upkeep of in-memory state and expired rows.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        state.limiter.sweep(now);
        // Shared rate windows (PostgreSQL) of minutes gone by, one minute late: a request
        // that read the clock before the minute turned may still count in the last one.
        if let Err(e) = state.store.purge_rate_windows((now / 60) as i64 - 1).await {
            tracing::warn!(error = %e, "could not purge rate windows");
        }
        state.keys.sweep();
        http::metrics::handle().run_upkeep();
        // Every ten minutes from five minutes after start: what is past its retention.
        if rounds % 20 == 10 {
            match services::retention::sweep(&state.store, cp_types::now()).await {
                Ok(s) if s != services::retention::Swept::default() => tracing::info!(
                    events = s.events,
                    decisions = s.decisions,
                    deliveries = s.deliveries,
                    firings = s.firings,
                    idempotency_records = s.idempotency_records,
                    "deleted what is past its retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
            }
        }
        rounds += 1;
    }
}
