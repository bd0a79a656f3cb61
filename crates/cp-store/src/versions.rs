//! The per-organization catalog version: a counter the database's own triggers move on every
//! write to a table that agent and team lists embed (see migration 0005).

use cp_types::org::PolicyEnforcement;

use crate::Store;
use crate::db::with_db;
use crate::error::{StoreError, StoreResult, parse};

impl Store {
    /// The organization's current catalog version; 0 before its first catalog write. Equal
    /// versions mean equal agent and team lists, on every replica of a shared database.
    pub async fn catalog_version(&self, org: &str) -> StoreResult<i64> {
        let version: Option<i64> = with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT version FROM catalog_versions WHERE organization_id = $1")
                .bind(org)
                .fetch_optional(pool)
                .await)?;
        Ok(version.unwrap_or(0))
    }
}

impl Store {
    /// The organization's `policy_enforcement` setting and its catalog version, in one read:
    /// all an enforcement point needs before it can use a cached policy set.
    pub async fn policy_state(&self, org: &str) -> StoreResult<(PolicyEnforcement, i64)> {
        let row: Option<(String, Option<i64>)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT o.policy_enforcement, v.version FROM organizations o \
                 LEFT JOIN catalog_versions v ON v.organization_id = o.id WHERE o.id = $1")
                .bind(org)
                .fetch_optional(pool)
                .await)?;
        let (mode, version) = row.ok_or(StoreError::NotFound)?;
        Ok((parse(&mode)?, version.unwrap_or(0)))
    }
}
