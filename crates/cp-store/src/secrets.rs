//! Secrets: names and descriptions in the clear, values only as ciphertext (the server
//! encrypts; this module stores bytes), and the log of every read of a value.

use cp_types::org::Role;
use cp_types::page::PageRequest;
use cp_types::secret::{KeyRef, Secret, SecretAccess};
use cp_types::{Page, Timestamp, now};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! secret_columns {
    () => {
        "id, organization_id, name, description, version, created_at, updated_at, last_rotated_at"
    };
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: Uuid,
    organization_id: String,
    name: String,
    description: Option<String>,
    version: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
    last_rotated_at: Option<Timestamp>,
}

impl SecretRow {
    fn into_secret(self) -> StoreResult<Secret> {
        Ok(Secret {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            description: self.description,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            last_rotated_at: self.last_rotated_at,
        })
    }
}

/// A secret's ciphertext, as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct SealedSecret {
    pub id: Uuid,
    pub name: String,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Who read a secret value or an integration credential, for the access logs.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    pub key_id: Uuid,
    pub key_name: &'a str,
    pub role: Role,
    /// `api` (an endpoint that returns the value), `execution` (handed to a worker's run) or
    /// `refused` (a worker key asked for a value its runs do not use).
    pub purpose: &'a str,
    /// The run the value was read for, and the key that started it.
    pub run: Option<RunRef>,
}

/// A run that a value was read for: the execution and the key that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRef {
    pub execution_id: Uuid,
    pub started_by: Option<Uuid>,
}

impl Reader<'_> {
    pub(crate) fn execution_id(&self) -> Option<Uuid> {
        self.run.map(|r| r.execution_id)
    }

    pub(crate) fn started_by(&self) -> Option<Uuid> {
        self.run.and_then(|r| r.started_by)
    }
}

#[derive(sqlx::FromRow)]
struct AccessRow {
    id: Uuid,
    secret_name: String,
    key_id: Uuid,
    key_name: String,
    role: String,
    purpose: String,
    accessed_at: Timestamp,
    execution_id: Option<Uuid>,
    started_by: Option<Uuid>,
    started_by_name: Option<String>,
}

impl Store {
    /// The secrets of one organization.
    pub fn secrets<'a>(&'a self, org: &'a str) -> Secrets<'a> {
        Secrets { db: &self.db, org }
    }
}

/// The secrets of one organization.
pub struct Secrets<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Secrets<'_> {
    /// Newest first.
    pub async fn list(&self, page: PageRequest) -> StoreResult<Page<Secret>> {
        let rows: Vec<SecretRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", secret_columns!(), " FROM secrets WHERE organization_id = $1 \
                ORDER BY id DESC LIMIT $2 OFFSET $3"))
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE organization_id = $1")
                    .bind(self.org).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, SecretRow::into_secret).await
    }

    pub async fn get(&self, name: &str) -> StoreResult<Secret> {
        let row: SecretRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", secret_columns!(), " FROM secrets WHERE organization_id = $1 AND name = $2"))
                .bind(self.org).bind(name).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_secret()
    }

    /// Stores a new secret; `ciphertext` was sealed for this organization and name.
    pub async fn create(&self, name: &str, description: Option<&str>, ciphertext: &[u8]) -> StoreResult<Secret> {
        let at = now();
        let row: SecretRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "INSERT INTO secrets (id, organization_id, name, description, ciphertext, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $6) RETURNING ", secret_columns!()))
                .bind(Uuid::now_v7()).bind(self.org).bind(name).bind(description).bind(ciphertext).bind(at)
                .fetch_one(pool).await)
        .map_err(|e| StoreError::unique(e, "secret", &["name"]))?;
        row.into_secret()
    }

    /// Partial update in one statement: `description` (`Some(None)` clears it) and, with a new
    /// `ciphertext`, a rotation (version + 1, `last_rotated_at` set).
    pub async fn update(
        &self,
        name: &str,
        description: Option<Option<&str>>,
        ciphertext: Option<&[u8]>,
    ) -> StoreResult<Secret> {
        let row: SecretRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "UPDATE secrets SET \
                   description = CASE WHEN $3 THEN $4 ELSE description END, \
                   ciphertext = CASE WHEN $5 THEN $6 ELSE ciphertext END, \
                   version = CASE WHEN $5 THEN version + 1 ELSE version END, \
                   last_rotated_at = CASE WHEN $5 THEN $7 ELSE last_rotated_at END, \
                   updated_at = $7 \
                 WHERE organization_id = $1 AND name = $2 RETURNING ", secret_columns!()))
                .bind(self.org)
                .bind(name)
                .bind(description.is_some())
                .bind(description.flatten())
                .bind(ciphertext.is_some())
                .bind(ciphertext.unwrap_or_default())
                .bind(now())
                .fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_secret()
    }

    /// Deletes a secret; returns its id. Its access log stays.
    pub async fn delete(&self, name: &str) -> StoreResult<Uuid> {
        let id: Option<Uuid> = with_db!(self.db, pool =>
            sqlx::query_scalar("DELETE FROM secrets WHERE organization_id = $1 AND name = $2 RETURNING id")
                .bind(self.org).bind(name).fetch_optional(pool).await)?;
        id.ok_or(StoreError::NotFound)
    }

    /// The ciphertext of one secret.
    pub async fn sealed(&self, name: &str) -> StoreResult<SealedSecret> {
        with_db!(self.db, pool =>
            sqlx::query_as("SELECT id, name, ciphertext FROM secrets WHERE organization_id = $1 AND name = $2")
                .bind(self.org).bind(name).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)
    }

    /// The ciphertexts of the named secrets that exist, in one query (any order).
    pub async fn sealed_many(&self, names: &[String]) -> StoreResult<Vec<SealedSecret>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match self.db {
            Db::Sqlite(pool, _) => {
                sqlx::query_as(
                    "SELECT id, name, ciphertext FROM secrets \
                     WHERE organization_id = $1 AND name IN (SELECT value FROM json_each($2))",
                )
                .bind(self.org)
                .bind(Json(names))
                .fetch_all(pool)
                .await?
            }
            Db::Postgres(pool, _) => {
                sqlx::query_as("SELECT id, name, ciphertext FROM secrets WHERE organization_id = $1 AND name = ANY($2)")
                    .bind(self.org)
                    .bind(names)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// Records that `reader` read these secrets' values (`(id, name)` each), in one transaction.
    pub async fn record_reads(&self, secrets: &[(Uuid, &str)], reader: Reader<'_>) -> StoreResult<()> {
        if secrets.is_empty() {
            return Ok(());
        }
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            for (id, name) in secrets {
                sqlx::query(
                    "INSERT INTO secret_access_log (id, organization_id, secret_id, secret_name, key_id, key_name, \
                       role, purpose, accessed_at, execution_id, started_by) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
                    .bind(Uuid::now_v7())
                    .bind(self.org)
                    .bind(id)
                    .bind(name)
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

    /// The reads of the values of secrets with this name, newest first.
    pub async fn access_log(&self, name: &str, page: PageRequest) -> StoreResult<Page<SecretAccess>> {
        let rows: Vec<AccessRow> = with_db!(self.db, pool =>
            sqlx::query_as("SELECT l.id, l.secret_name, l.key_id, l.key_name, l.role, l.purpose, l.accessed_at, \
                l.execution_id, l.started_by, k.name AS started_by_name FROM secret_access_log l \
                LEFT JOIN api_keys k ON k.id = l.started_by \
                WHERE l.organization_id = $1 AND l.secret_name = $2 ORDER BY l.id DESC LIMIT $3 OFFSET $4")
                .bind(self.org).bind(name).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM secret_access_log WHERE organization_id = $1 AND secret_name = $2")
                    .bind(self.org).bind(name).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, |r: AccessRow| {
            Ok(SecretAccess {
                id: r.id,
                secret_name: r.secret_name,
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
