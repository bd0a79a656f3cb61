//! `kubiya-cp serve`: migrations, master key, bootstrap admin key, then the API until Ctrl-C.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use cp_server::{AppState, ServerConfig};
use cp_store::keys::is_well_formed;

use crate::admin::{open, redact};
use crate::cli::{Global, ServeArgs};
use crate::master_key;

const ADMIN_KEY_FILE: &str = "admin-api-key";

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(key) = &args.bootstrap_api_key
        && !is_well_formed(key)
    {
        bail!("--bootstrap-api-key must be 'kby_' followed by at least 24 URL-safe characters (A-Z a-z 0-9 - _)");
    }
    std::fs::create_dir_all(&global.data_dir)
        .with_context(|| format!("cannot create the data dir {}", global.data_dir.display()))?;
    let store = open(global).await?;
    let master_key = master_key::load(&args.key, &global.data_dir, &store).await?;

    let boot = store
        .bootstrap(args.bootstrap_api_key.as_deref())
        .await
        .context("cannot bootstrap the database")?;
    match (&boot.admin_key, boot.generated) {
        (Some(key), true) => {
            let path = global.data_dir.join(ADMIN_KEY_FILE);
            write_secret_file(&path, key)?;
            eprintln!(
                "\n  Created organization 'default' and its admin API key (shown once):\n\n    {key}\n\n  \
                 It is also saved in {} (mode 0600).\n",
                path.display()
            );
        }
        (Some(_), false) => {
            tracing::info!("created organization 'default' with the configured bootstrap key")
        }
        (None, _) => {
            if let Some(key) = &args.bootstrap_api_key
                && !store.key_exists(key).await?
            {
                tracing::warn!("--bootstrap-api-key ignored: the database already has organizations");
            }
        }
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr()?;
    let mut config = ServerConfig::new(listen, master_key);
    config.public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{listen}"));
    config.body_limit = args.body_limit;
    config.worker_rate_limit = args.worker_rate_limit;
    config.job_webhook_rate_limit = args.job_webhook_rate_limit;
    config.max_org_rate_limit = args.max_org_rate_limit;
    config.allow_private_webhook_targets = args.allow_private_webhook_targets;
    config.allow_private_model_urls = args.allow_private_model_urls;
    config.header_timeout = std::time::Duration::from_secs(args.header_timeout);
    config.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    config.policy_sandbox.memory_bytes = args.policy_memory_mib << 20;
    tracing::info!(
        listen = %listen,
        database = %redact(&global.database_url()),
        backend = store.backend().as_str(),
        startup_ms = started.elapsed().as_millis() as u64,
        "kubiya-cp serving"
    );
    let state = AppState::new(store.clone(), config);
    cp_server::serve(listener, state, shutdown_signal()).await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: draining in-flight requests");
}

/// Writes a secret readable only by its owner.
pub(crate) fn write_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only when the file is created: tighten a leftover file too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{content}")?;
    Ok(())
}
