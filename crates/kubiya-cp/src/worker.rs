//! `kubiya-cp worker`: runs agents from a worker queue until SIGINT or SIGTERM, then drains.

use std::time::Duration;

use crate::cli::WorkerArgs;

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let config = cp_worker::Config {
        control_plane_url: args.control_plane_url,
        api_key: args.api_key,
        queue_id: args.queue_id,
        concurrency: args.concurrency.max(1),
        runner_name: args.runner_name.unwrap_or_else(|| hostname.clone()),
        hostname,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        poll_wait: Duration::from_secs(20),
    };
    cp_worker::run(config, crate::serve::shutdown_signal()).await
}
