//! Custom integrations: bundles of env vars, secret names and files (no credentials of their
//! own: secret values stay in `secrets`).

use cp_types::custom_integration::{
    CreateCustomIntegration, CustomIntegration, CustomIntegrationConfig, CustomIntegrationStatus, DEFAULT_CUSTOM_TYPE,
    UpdateCustomIntegration,
};
use cp_types::page::PageRequest;
use cp_types::{Page, Timestamp, now};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! custom_columns {
    () => {
        "id, organization_id, name, integration_type, description, status, config, tags, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct CustomRow {
    id: Uuid,
    organization_id: String,
    name: String,
    integration_type: String,
    description: Option<String>,
    status: String,
    config: Json<CustomIntegrationConfig>,
    tags: Json<Vec<String>>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl CustomRow {
    fn into_custom(self) -> StoreResult<CustomIntegration> {
        Ok(CustomIntegration {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            integration_type: self.integration_type,
            description: self.description,
            status: parse(&self.status)?,
            config: self.config.0,
            tags: self.tags.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl Store {
    /// The custom integrations of one organization.
    pub fn custom_integrations<'a>(&'a self, org: &'a str) -> CustomIntegrations<'a> {
        CustomIntegrations { db: &self.db, org }
    }
}

/// The custom integrations of one organization.
pub struct CustomIntegrations<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "custom integration", &["name"])
}

impl CustomIntegrations<'_> {
    /// Newest first.
    pub async fn list(&self, page: PageRequest) -> StoreResult<Page<CustomIntegration>> {
        let rows: Vec<CustomRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", custom_columns!(), " FROM custom_integrations WHERE organization_id = $1 \
                ORDER BY id DESC LIMIT $2 OFFSET $3"))
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM custom_integrations WHERE organization_id = $1")
                    .bind(self.org).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, CustomRow::into_custom).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<CustomIntegration> {
        let row: CustomRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", custom_columns!(), " FROM custom_integrations WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_custom()
    }

    /// The custom integrations among `ids` that exist (any order).
    pub async fn get_many(&self, ids: &[Uuid]) -> StoreResult<Vec<CustomIntegration>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<CustomRow> = match self.db {
            Db::Sqlite(pool, _) => {
                let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string().to_uppercase()).collect();
                sqlx::query_as(concat!(
                    "SELECT ",
                    custom_columns!(),
                    " FROM custom_integrations WHERE organization_id = $1 AND hex(id) IN (SELECT value FROM json_each($2))"
                ))
                .bind(self.org)
                .bind(Json(hex))
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool, _) => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    custom_columns!(),
                    " FROM custom_integrations WHERE organization_id = $1 AND id = ANY($2)"
                ))
                .bind(self.org)
                .bind(ids)
                .fetch_all(pool)
                .await?
            }
        };
        rows.into_iter().map(CustomRow::into_custom).collect()
    }

    pub async fn create(&self, req: &CreateCustomIntegration) -> StoreResult<CustomIntegration> {
        let at = now();
        let row: CustomRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "INSERT INTO custom_integrations (id, organization_id, name, integration_type, description, status, \
                   config, tags, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING ", custom_columns!()))
                .bind(Uuid::now_v7())
                .bind(self.org)
                .bind(req.name.trim())
                .bind(req.integration_type.as_deref().unwrap_or(DEFAULT_CUSTOM_TYPE))
                .bind(&req.description)
                .bind(req.status.unwrap_or(CustomIntegrationStatus::Active).as_str())
                .bind(Json(req.config.clone().unwrap_or_default()))
                .bind(Json(req.tags.clone().unwrap_or_default()))
                .bind(at)
                .fetch_one(pool).await)
        .map_err(conflict)?;
        row.into_custom()
    }

    /// Partial update in one statement.
    pub async fn update(&self, id: Uuid, req: &UpdateCustomIntegration) -> StoreResult<CustomIntegration> {
        let row: CustomRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "UPDATE custom_integrations SET \
                   name = COALESCE($3, name), \
                   integration_type = COALESCE($4, integration_type), \
                   description = CASE WHEN $5 THEN $6 ELSE description END, \
                   status = COALESCE($7, status), \
                   config = COALESCE($8, config), \
                   tags = COALESCE($9, tags), \
                   updated_at = $10 \
                 WHERE organization_id = $1 AND id = $2 RETURNING ", custom_columns!()))
                .bind(self.org)
                .bind(id)
                .bind(req.name.as_deref().map(str::trim))
                .bind(req.integration_type.as_deref())
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.status.map(|s| s.as_str()))
                .bind(req.config.clone().map(Json))
                .bind(req.tags.clone().map(Json))
                .bind(now())
                .fetch_optional(pool).await)
        .map_err(conflict)?
        .ok_or(StoreError::NotFound)?;
        row.into_custom()
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let n = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM custom_integrations WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}
