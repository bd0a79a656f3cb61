//! The per-organization catalog version: a counter the database's own triggers move on every
//! write to a table that agent and team lists embed (see migration 0005).

use crate::Store;
use crate::db::with_db;
use crate::error::StoreResult;

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
