//! Integrations: connection settings in the clear, credentials only as ciphertext (the server
//! encrypts; this module stores bytes), and the log of every read of credentials.

use cp_types::integration::{
    CreateIntegration, Integration, IntegrationAccess, IntegrationStatus, IntegrationType, UpdateIntegration,
};
use cp_types::org::Role;
use cp_types::page::PageRequest;
use cp_types::secret::KeyRef;
use cp_types::{Page, Timestamp, now};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;
use crate::secrets::Reader;

macro_rules! integration_columns {
    () => {
        "id, organization_id, name, integration_type, description, config, status, \
         credentials IS NOT NULL AS has_credentials, created_at, updated_at, credentials_updated_at"
    };
}

/// Connected means: credentials stored and status active.
macro_rules! connected_filter {
    () => {
        "($2 IS NULL OR $2 = FALSE OR (credentials IS NOT NULL AND status = 'active')) \
         AND ($3 IS NULL OR integration_type = $3)"
    };
}

#[derive(sqlx::FromRow)]
struct IntegrationRow {
    id: Uuid,
    organization_id: String,
    name: String,
    integration_type: String,
    description: Option<String>,
    config: Json<Value>,
    status: String,
    has_credentials: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
    credentials_updated_at: Option<Timestamp>,
}

impl IntegrationRow {
    fn into_integration(self) -> StoreResult<Integration> {
        let integration_type: IntegrationType = parse(&self.integration_type)?;
        let status: IntegrationStatus = parse(&self.status)?;
        Ok(Integration {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            integration_type,
            description: self.description,
            config: self.config.0,
            status,
            connected: self.has_credentials && status == IntegrationStatus::Active,
            has_credentials: self.has_credentials,
            env_vars: integration_type.env_var_names().iter().map(|s| s.to_string()).collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            credentials_updated_at: self.credentials_updated_at,
        })
    }
}

/// An integration with its credentials' ciphertext, for the code that decrypts them.
#[derive(Clone)]
pub struct SealedIntegration {
    pub id: Uuid,
    pub name: String,
    pub integration_type: IntegrationType,
    pub status: IntegrationStatus,
    pub credentials: Option<Vec<u8>>,
}

impl std::fmt::Debug for SealedIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedIntegration")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("integration_type", &self.integration_type)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    id: Uuid,
    name: String,
    integration_type: String,
    status: String,
    credentials: Option<Vec<u8>>,
}

impl SealedRow {
    fn into_sealed(self) -> StoreResult<SealedIntegration> {
        Ok(SealedIntegration {
            id: self.id,
            name: self.name,
            integration_type: parse(&self.integration_type)?,
            status: parse(&self.status)?,
            credentials: self.credentials,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AccessRow {
    id: Uuid,
    integration_id: Uuid,
    integration_name: String,
    integration_type: String,
    key_id: Uuid,
    key_name: String,
    role: String,
    purpose: String,
    accessed_at: Timestamp,
    execution_id: Option<Uuid>,
    started_by: Option<Uuid>,
    started_by_name: Option<String>,
}

/// Filters of `GET /integrations`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntegrationFilter {
    /// `Some(true)`: only integrations with credentials and status active.
    pub connected_only: Option<bool>,
    pub integration_type: Option<IntegrationType>,
}

impl Store {
    /// The integrations of one organization.
    pub fn integrations<'a>(&'a self, org: &'a str) -> Integrations<'a> {
        Integrations { db: &self.db, org }
    }
}

/// The integrations of one organization.
pub struct Integrations<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "integration", &["name"])
}

impl Integrations<'_> {
    /// Newest first.
    pub async fn list(&self, filter: IntegrationFilter, page: PageRequest) -> StoreResult<Page<Integration>> {
        let kind = filter.integration_type.map(|t| t.as_str());
        let rows: Vec<IntegrationRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", integration_columns!(), " FROM integrations WHERE organization_id = $1 AND ",
                connected_filter!(), " ORDER BY id DESC LIMIT $4 OFFSET $5"))
                .bind(self.org).bind(filter.connected_only).bind(kind).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM integrations WHERE organization_id = $1 AND ", connected_filter!()))
                    .bind(self.org).bind(filter.connected_only).bind(kind).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, IntegrationRow::into_integration).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Integration> {
        let row: IntegrationRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", integration_columns!(), " FROM integrations WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_integration()
    }

    /// Stores a new integration under `id` (the id its credentials were sealed for).
    pub async fn create(
        &self,
        id: Uuid,
        req: &CreateIntegration,
        credentials: Option<&[u8]>,
    ) -> StoreResult<Integration> {
        let at = now();
        let row: IntegrationRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "INSERT INTO integrations (id, organization_id, name, integration_type, description, config, credentials, \
                   status, created_at, updated_at, credentials_updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING ", integration_columns!()))
                .bind(id)
                .bind(self.org)
                .bind(req.name.trim())
                .bind(req.integration_type.as_str())
                .bind(&req.description)
                .bind(Json(req.config.clone().unwrap_or_else(|| Value::Object(Default::default()))))
                .bind(credentials)
                .bind(req.status.unwrap_or(IntegrationStatus::Active).as_str())
                .bind(at)
                .bind(credentials.map(|_| at))
                .fetch_one(pool).await)
        .map_err(conflict)?;
        row.into_integration()
    }

    /// Partial update in one statement; `credentials`: `None` keeps them, `Some(None)` removes
    /// them, `Some(Some(c))` replaces them.
    pub async fn update(
        &self,
        id: Uuid,
        req: &UpdateIntegration,
        credentials: Option<Option<&[u8]>>,
    ) -> StoreResult<Integration> {
        let at = now();
        let row: IntegrationRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "UPDATE integrations SET \
                   name = COALESCE($3, name), \
                   description = CASE WHEN $4 THEN $5 ELSE description END, \
                   config = COALESCE($6, config), \
                   status = COALESCE($7, status), \
                   credentials = CASE WHEN $8 THEN $9 ELSE credentials END, \
                   credentials_updated_at = CASE WHEN $8 THEN $10 ELSE credentials_updated_at END, \
                   updated_at = $10 \
                 WHERE organization_id = $1 AND id = $2 RETURNING ", integration_columns!()))
                .bind(self.org)
                .bind(id)
                .bind(req.name.as_deref().map(str::trim))
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.config.clone().map(Json))
                .bind(req.status.map(|s| s.as_str()))
                .bind(credentials.is_some())
                .bind(credentials.flatten())
                .bind(at)
                .fetch_optional(pool).await)
        .map_err(conflict)?
        .ok_or(StoreError::NotFound)?;
        row.into_integration()
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let n = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM integrations WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    /// One integration with its credentials' ciphertext.
    pub async fn sealed(&self, id: Uuid) -> StoreResult<SealedIntegration> {
        let row: SealedRow = with_db!(self.db, pool =>
            sqlx::query_as("SELECT id, name, integration_type, status, credentials FROM integrations \
                WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_sealed()
    }

    /// Every integration of a type (oldest first), for clients that address "the" integration
    /// of a type without its id.
    pub async fn sealed_of_type(&self, integration_type: IntegrationType) -> StoreResult<Vec<SealedIntegration>> {
        let rows: Vec<SealedRow> = with_db!(self.db, pool =>
            sqlx::query_as("SELECT id, name, integration_type, status, credentials FROM integrations \
                WHERE organization_id = $1 AND integration_type = $2 ORDER BY id LIMIT 100")
                .bind(self.org).bind(integration_type.as_str()).fetch_all(pool).await)?;
        rows.into_iter().map(SealedRow::into_sealed).collect()
    }

    /// The integrations among `ids` that exist, in one query (any order).
    pub async fn sealed_many(&self, ids: &[Uuid]) -> StoreResult<Vec<SealedIntegration>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<SealedRow> = match self.db {
            Db::Sqlite(pool, _) => {
                // Ids are 16-byte blobs on SQLite; compare their hex form with the UUIDs' simple form.
                let hex: Vec<String> = ids.iter().map(|id| id.simple().to_string().to_uppercase()).collect();
                sqlx::query_as(
                    "SELECT id, name, integration_type, status, credentials FROM integrations \
                     WHERE organization_id = $1 AND hex(id) IN (SELECT value FROM json_each($2))",
                )
                .bind(self.org)
                .bind(Json(hex))
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool, _) => {
                sqlx::query_as(
                    "SELECT id, name, integration_type, status, credentials FROM integrations \
                     WHERE organization_id = $1 AND id = ANY($2)",
                )
                .bind(self.org)
                .bind(ids)
                .fetch_all(pool)
                .await?
            }
        };
        rows.into_iter().map(SealedRow::into_sealed).collect()
    }

    /// Records that `reader` read these integrations' credentials, in one transaction.
    pub async fn record_reads(&self, integrations: &[&SealedIntegration], reader: Reader<'_>) -> StoreResult<()> {
        if integrations.is_empty() {
            return Ok(());
        }
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            for i in integrations {
                sqlx::query(
                    "INSERT INTO integration_access_log (id, organization_id, integration_id, integration_name, \
                       integration_type, key_id, key_name, role, purpose, accessed_at, execution_id, started_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")
                    .bind(Uuid::now_v7())
                    .bind(self.org)
                    .bind(i.id)
                    .bind(&i.name)
                    .bind(i.integration_type.as_str())
                    .bind(reader.key_id)
                    .bind(reader.key_name)
                    .bind(reader.role.as_str())
                    .bind(reader.purpose)
                    .bind(at)
                    .bind(reader.execution_id())
                    .bind(reader.started_by())
                    .execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The reads of an integration's credentials, newest first.
    pub async fn access_log(&self, id: Uuid, page: PageRequest) -> StoreResult<Page<IntegrationAccess>> {
        let rows: Vec<AccessRow> = with_db!(self.db, pool =>
            sqlx::query_as("SELECT l.id, l.integration_id, l.integration_name, l.integration_type, l.key_id, l.key_name, \
                l.role, l.purpose, l.accessed_at, l.execution_id, l.started_by, k.name AS started_by_name \
                FROM integration_access_log l LEFT JOIN api_keys k ON k.id = l.started_by \
                WHERE l.organization_id = $1 AND l.integration_id = $2 ORDER BY l.id DESC LIMIT $3 OFFSET $4")
                .bind(self.org).bind(id).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM integration_access_log WHERE organization_id = $1 AND integration_id = $2")
                    .bind(self.org).bind(id).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, |r: AccessRow| {
            Ok(IntegrationAccess {
                id: r.id,
                integration_id: r.integration_id,
                integration_name: r.integration_name,
                integration_type: parse(&r.integration_type)?,
                key_id: r.key_id,
                key_name: r.key_name,
                role: parse::<Role>(&r.role)?,
                purpose: r.purpose,
                accessed_at: r.accessed_at,
                execution_id: r.execution_id,
                started_by: r.started_by.map(|key_id| KeyRef {
                    key_id,
                    key_name: r.started_by_name,
                }),
            })
        })
        .await
    }
}
