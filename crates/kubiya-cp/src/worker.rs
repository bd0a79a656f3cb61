//! `kubiya-cp worker`: runs agents from a worker queue until SIGINT or SIGTERM, then drains.

use std::time::Duration;

use cp_worker::sandbox::Sandbox;

use crate::cli::WorkerArgs;

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let Some(api_key) = args.api_key.filter(|k| !k.is_empty()) else {
        anyhow::bail!("set KUBIYA_API_KEY to a worker key of the queue's organization");
    };
    cp_worker::sandbox::protect_worker();
    let sandbox = Sandbox::probe(args.unsandboxed_tools);
    match sandbox {
        Sandbox::Namespaces => tracing::info!("tools run in new PID and mount namespaces (unshare)"),
        Sandbox::Unsandboxed => {
            tracing::warn!("--unsandboxed-tools: shell and claude_code processes can read the worker")
        }
        Sandbox::Unavailable => tracing::warn!(
            "this host cannot create PID and mount namespaces: shell and claude_code tools are refused \
             (start with --unsandboxed-tools to run them without a sandbox)"
        ),
    }
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
        api_key,
        queue_id: args.queue_id,
        concurrency: args.concurrency.max(1),
        runner_name: args.runner_name.unwrap_or_else(|| hostname.clone()),
        hostname,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        poll_wait: Duration::from_secs(20),
        tools: cp_worker::ToolSettings {
            allow_private_http: args.allow_private_http,
            sandbox,
        },
    };
    if args.allow_private_http {
        tracing::warn!("--allow-private-http: the http tool may reach loopback, private and link-local addresses");
    }
    cp_worker::run(config, crate::serve::shutdown_signal()).await
}
