//! Prometheus metrics: request counts and latency histograms per route; workflow runs by the
//! state they entered and the step-to-step overhead (recorded by `services::workflow_runs`).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder (metrics are global; several apps in one test process share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .set_buckets_for_metric(Matcher::Full("workflow_step_overhead_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program); then our
        // handle renders only what it records, which is still correct for /metrics.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Records one finished request under its route template (not its concrete path, so ids do
/// not explode the label space); unmatched requests share one label.
pub fn record_request(method: &Method, route: Option<&str>, status: u16, elapsed: Duration) {
    let route = route.unwrap_or("unmatched").to_owned();
    // Arbitrary method names would each open a new series: only the standard ones are labels.
    let method = match *method {
        Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            method.as_str()
        }
        _ => "OTHER",
    };
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
}

/// `GET /metrics` in Prometheus text format.
pub async fn render() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle().render(),
    )
}
