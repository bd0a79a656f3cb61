//! Policies: Rego documents of one organization. Compiling is the caller's job (the store only
//! keeps the package the caller found); `version` moves when the content changes.

use cp_types::page::PageRequest;
use cp_types::policy::{CreatePolicy, Policy, UpdatePolicy};
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult};
use crate::page::page_of;

macro_rules! policy_columns {
    () => {
        "id, organization_id, name, description, policy_content, package, enabled, tags, metadata, version, \
         created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: Uuid,
    organization_id: String,
    name: String,
    description: Option<String>,
    policy_content: String,
    package: String,
    enabled: bool,
    tags: Json<Vec<String>>,
    metadata: Json<Value>,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl PolicyRow {
    fn into_policy(self) -> StoreResult<Policy> {
        Ok(Policy {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            policy_content: self.policy_content,
            package: self.package,
            enabled: self.enabled,
            tags: self.tags.0,
            metadata: self.metadata.0,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Store {
    /// The policies of one organization.
    pub fn policies<'a>(&'a self, org: &'a str) -> Policies<'a> {
        Policies { db: &self.db, org }
    }
}

/// The policies of one organization.
pub struct Policies<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "policy", &["name"])
}

impl Policies<'_> {
    /// Policies, newest first.
    pub async fn list(&self, enabled: Option<bool>, page: PageRequest) -> StoreResult<Page<Policy>> {
        let rows: Vec<PolicyRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", policy_columns!(), " FROM policies \
                WHERE organization_id = $1 AND ($2 IS NULL OR enabled = $2) ORDER BY id DESC LIMIT $3 OFFSET $4"))
                .bind(self.org).bind(enabled).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM policies WHERE organization_id = $1 AND ($2 IS NULL OR enabled = $2)")
                    .bind(self.org).bind(enabled).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, PolicyRow::into_policy).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Policy> {
        let row: PolicyRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", policy_columns!(), " FROM policies WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_policy()
    }

    /// Stores a policy whose content compiled to `package`.
    pub async fn create(&self, req: &CreatePolicy, package: &str) -> StoreResult<Policy> {
        let id = Uuid::now_v7();
        let at = now();
        with_db!(self.db, pool =>
            sqlx::query(
                "INSERT INTO policies (id, organization_id, name, description, policy_content, package, enabled, tags, \
                   metadata, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10)")
                .bind(id).bind(self.org).bind(req.name.trim()).bind(&req.description).bind(&req.policy_content)
                .bind(package).bind(req.enabled.unwrap_or(true)).bind(Json(req.tags.clone().unwrap_or_default()))
                .bind(Json(req.metadata.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(at)
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        self.get(id).await
    }

    /// Applies a partial update; `package` is given when the content changes (and compiled).
    /// The version moves only when the content actually differs.
    pub async fn update(&self, id: Uuid, req: &UpdatePolicy, package: Option<&str>) -> StoreResult<Policy> {
        let updated = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE policies SET \
                   name = COALESCE($3, name), \
                   description = CASE WHEN $4 THEN $5 ELSE description END, \
                   version = CASE WHEN $6 IS NOT NULL AND $6 <> policy_content THEN version + 1 ELSE version END, \
                   policy_content = COALESCE($6, policy_content), \
                   package = COALESCE($7, package), \
                   enabled = COALESCE($8, enabled), \
                   tags = COALESCE($9, tags), \
                   metadata = COALESCE($10, metadata), \
                   updated_at = $11 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(req.name.as_deref().map(str::trim))
                .bind(req.description.is_some()).bind(req.description.clone().flatten())
                .bind(&req.policy_content).bind(package).bind(req.enabled)
                .bind(req.tags.clone().map(Json)).bind(req.metadata.clone().map(Json)).bind(now())
                .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(conflict)?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let deleted = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM policies WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
