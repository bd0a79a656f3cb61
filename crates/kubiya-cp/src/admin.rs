//! Administration straight on the database: migrate, sweep, orgs, keys.

use anyhow::{Context, bail};
use cp_store::orgs::BOOTSTRAP_ORG;
use cp_store::{Store, StoreError};
use cp_types::validate::is_slug;

use crate::cli::{Global, KeysCommand, OrgsCommand};

/// Connects and migrates (every command works on an up-to-date schema).
pub async fn open(global: &Global) -> anyhow::Result<Store> {
    let url = global.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&url)))?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

/// Hides a password in a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

pub async fn migrate(global: &Global) -> anyhow::Result<()> {
    let store = open(global).await?;
    store.close().await;
    eprintln!("migrations applied");
    Ok(())
}

pub async fn sweep(global: &Global) -> anyhow::Result<()> {
    let store = open(global).await?;
    let swept = cp_server::services::retention::sweep(&store, cp_types::now()).await;
    store.close().await;
    let s = swept?;
    println!(
        "deleted {} events, {} policy decisions, {} webhook deliveries, {} idempotency records",
        s.events, s.decisions, s.deliveries, s.idempotency_records
    );
    Ok(())
}

pub async fn orgs(global: &Global, cmd: OrgsCommand) -> anyhow::Result<()> {
    match cmd {
        OrgsCommand::Create { slug, name } => {
            if !is_slug(&slug) {
                bail!("'{slug}' is not a valid organization slug: use 2 to 63 of a-z, 0-9 and '-'");
            }
            let store = open(global).await?;
            let result = store.create_org(&slug, name.as_deref().unwrap_or(&slug)).await;
            store.close().await;
            match result {
                Ok(org) => {
                    println!("{}", org.id);
                    Ok(())
                }
                Err(StoreError::Conflict(_)) => bail!("organization '{slug}' already exists"),
                Err(e) => Err(e.into()),
            }
        }
    }
}

pub async fn keys(global: &Global, cmd: KeysCommand) -> anyhow::Result<()> {
    let store = open(global).await?;
    let result = keys_inner(&store, cmd).await;
    store.close().await;
    result
}

async fn keys_inner(store: &Store, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { org, role, name } => {
            // `keys create --org default` on a database `serve` has not bootstrapped yet creates
            // the bootstrap organization first, so the documented first command always works.
            if org == BOOTSTRAP_ORG && matches!(store.get_org(&org).await, Err(StoreError::NotFound)) {
                match store.create_org(BOOTSTRAP_ORG, BOOTSTRAP_ORG).await {
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let created = match store.create_key_for_org(&org, &name, role, None).await {
                Err(StoreError::NotFound) => bail!("organization '{org}' does not exist"),
                other => other?,
            };
            // Only the key on stdout, so scripts can capture it.
            println!("{}", created.key);
        }
        KeysCommand::List { org } => {
            println!(
                "{:<36}  {:<16}  {:<7}  {:<14}  {:<20}  STATUS",
                "ID", "ORG", "ROLE", "PREFIX", "NAME"
            );
            for k in store.all_keys().await? {
                if org.as_ref().is_some_and(|o| *o != k.organization_id) {
                    continue;
                }
                let status = match (k.revoked_at, k.expires_at) {
                    (Some(_), _) => "revoked",
                    (None, Some(e)) if e <= cp_types::now() => "expired",
                    _ => "active",
                };
                println!(
                    "{:<36}  {:<16}  {:<7}  {:<14}  {:<20}  {status}",
                    k.id, k.organization_id, k.role, k.prefix, k.name
                );
            }
        }
        KeysCommand::Revoke { id } => match store.revoke_key_any_org(id).await {
            Ok(k) => eprintln!("revoked key {} ({})", k.id, k.name),
            Err(StoreError::NotFound) => bail!("no key with id {id}"),
            Err(e) => return Err(e.into()),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://./data/x.db"), "sqlite://./data/x.db");
    }
}
