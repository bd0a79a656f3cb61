//! API keys: generated high-entropy secrets stored only as SHA-256 digests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cp_types::org::{ApiKey, CreatedApiKey, RateLimitTier, Role};
use cp_types::page::PageRequest;
use cp_types::{Page, Timestamp, now};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

/// Every key starts with this.
pub const KEY_PREFIX: &str = "kby_";
/// Characters of a key kept in clear (in the `prefix` column) so people can recognise it.
const SHOWN_PREFIX_LEN: usize = 12;

/// A new random key: `kby_` and 43 URL-safe characters (256 bits).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a configured key has the required form: `kby_` and at least 24 URL-safe characters.
pub fn is_well_formed(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() >= 24
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The stored form of a key. Keys are 256-bit random values, so a plain digest is enough
/// (no salt or slow hash is needed) and a lookup by digest leaks nothing through timing.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key about to be inserted.
pub(crate) struct NewKey {
    pub id: Uuid,
    pub org: String,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub hash: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// The one queue a worker key may register on.
    pub worker_queue_id: Option<Uuid>,
}

impl NewKey {
    pub fn new(org: &str, name: &str, role: Role, expires_at: Option<Timestamp>, secret: &str, at: Timestamp) -> Self {
        NewKey {
            id: Uuid::now_v7(),
            org: org.to_string(),
            name: name.to_string(),
            role,
            prefix: secret.chars().take(SHOWN_PREFIX_LEN).collect(),
            hash: hash_key(secret),
            created_at: at,
            expires_at,
            worker_queue_id: None,
        }
    }

    pub fn into_api_key(self) -> ApiKey {
        ApiKey {
            id: self.id,
            organization_id: self.org,
            name: self.name,
            role: self.role,
            prefix: self.prefix,
            created_at: self.created_at,
            last_used_at: None,
            expires_at: self.expires_at,
            revoked_at: None,
            worker_queue_id: self.worker_queue_id,
        }
    }
}

/// Inserts a [`NewKey`] through any executor (a pool or an open transaction).
macro_rules! insert_key {
    ($key:expr, $exec:expr) => {{
        let k: &$crate::keys::NewKey = $key;
        sqlx::query(
            "INSERT INTO api_keys (id, organization_id, name, role, prefix, key_hash, created_at, expires_at, \
               worker_queue_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(k.id)
        .bind(&k.org)
        .bind(&k.name)
        .bind(k.role.as_str())
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.worker_queue_id)
        .execute($exec)
        .await?;
    }};
}
pub(crate) use insert_key;

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    organization_id: String,
    name: String,
    role: String,
    prefix: String,
    created_at: Timestamp,
    last_used_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    worker_queue_id: Option<Uuid>,
}

impl KeyRow {
    fn into_api_key(self) -> StoreResult<ApiKey> {
        Ok(ApiKey {
            id: self.id,
            organization_id: self.organization_id,
            name: self.name,
            role: parse(&self.role)?,
            prefix: self.prefix,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
            worker_queue_id: self.worker_queue_id,
        })
    }
}

macro_rules! key_columns {
    () => {
        "id, organization_id, name, role, prefix, created_at, last_used_at, expires_at, revoked_at, worker_queue_id"
    };
}

/// Who a presented key belongs to, with what the request pipeline needs to decide.
#[derive(Debug, Clone)]
pub struct KeyPrincipal {
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
    pub org_id: String,
    pub org_name: String,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Requests per minute of the organization's tier (worker keys are metered separately).
    pub rate_limit_per_minute: i64,
    /// The one queue a worker key may register on.
    pub worker_queue_id: Option<Uuid>,
}

impl KeyPrincipal {
    /// A revoked or expired key is refused.
    pub fn is_usable(&self, at: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > at)
    }
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    id: Uuid,
    name: String,
    role: String,
    organization_id: String,
    org_name: String,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    rate_limit_tier: String,
    rate_limit_per_minute: Option<i64>,
    worker_queue_id: Option<Uuid>,
}

impl Store {
    /// Finds the key with this secret, whatever its organization (the key decides the organization).
    pub async fn lookup_key(&self, secret: &str) -> StoreResult<Option<KeyPrincipal>> {
        let row: Option<PrincipalRow> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT k.id, k.name, k.role, k.organization_id, o.name AS org_name, k.expires_at, k.revoked_at, \
                        o.rate_limit_tier, o.rate_limit_per_minute, k.worker_queue_id \
                 FROM api_keys k JOIN organizations o ON o.id = k.organization_id WHERE k.key_hash = $1")
                .bind(hash_key(secret)).fetch_optional(pool).await)?;
        row.map(|r| {
            let tier: RateLimitTier = parse(&r.rate_limit_tier)?;
            Ok(KeyPrincipal {
                key_id: r.id,
                key_name: r.name,
                role: parse(&r.role)?,
                org_id: r.organization_id,
                org_name: r.org_name,
                expires_at: r.expires_at,
                revoked_at: r.revoked_at,
                rate_limit_per_minute: tier.per_minute(r.rate_limit_per_minute),
                worker_queue_id: r.worker_queue_id,
            })
        })
        .transpose()
    }

    /// Records that a key was used. Callers coalesce this (it is not needed per request).
    pub async fn touch_key(&self, key_id: Uuid, at: Timestamp) -> StoreResult<()> {
        with_db!(&self.db, pool =>
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(at).bind(key_id).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The API keys of one organization.
    pub fn keys<'a>(&'a self, org: &'a str) -> Keys<'a> {
        Keys { db: &self.db, org }
    }

    /// Every key of every organization (administration from the command line).
    pub async fn all_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows: Vec<KeyRow> = with_db!(&self.db, pool =>
            sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY organization_id, id"))
                .fetch_all(pool).await)?;
        rows.into_iter().map(KeyRow::into_api_key).collect()
    }

    /// Revokes a key by id whatever its organization (administration from the command line).
    pub async fn revoke_key_any_org(&self, id: Uuid) -> StoreResult<ApiKey> {
        let org: Option<String> = with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT organization_id FROM api_keys WHERE id = $1")
                .bind(id).fetch_optional(pool).await)?;
        let org = org.ok_or(StoreError::NotFound)?;
        self.keys(&org).revoke(id, false).await
    }
}

/// The keys of one organization.
pub struct Keys<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Keys<'_> {
    /// Creates a key (a worker key for `worker_queue_id` registers only there); the answer is
    /// the only place its secret ever appears.
    pub async fn create(
        &self,
        name: &str,
        role: Role,
        expires_at: Option<Timestamp>,
        worker_queue_id: Option<Uuid>,
    ) -> StoreResult<CreatedApiKey> {
        let secret = generate_key();
        let mut new = NewKey::new(self.org, name, role, expires_at, &secret, now());
        new.worker_queue_id = worker_queue_id;
        with_db!(self.db, pool => insert_key!(&new, pool));
        Ok(CreatedApiKey {
            api_key: new.into_api_key(),
            key: secret,
        })
    }

    pub async fn list(&self, page: PageRequest) -> StoreResult<Page<ApiKey>> {
        let rows: Vec<KeyRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "SELECT ", key_columns!(), " FROM api_keys WHERE organization_id = $1 \
                 ORDER BY id DESC LIMIT $2 OFFSET $3"))
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        page_of(rows, page, self.count(), KeyRow::into_api_key).await
    }

    async fn count(&self) -> StoreResult<i64> {
        Ok(with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE organization_id = $1")
                .bind(self.org).fetch_one(pool).await)?)
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<ApiKey> {
        let row: KeyRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM api_keys WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_api_key()
    }

    /// Revokes a key (idempotent: an already revoked key keeps its first revocation time).
    ///
    /// With `keep_last_admin`, revoking the organization's last usable admin key is refused,
    /// so an organization cannot lock itself out through the API.
    pub async fn revoke(&self, id: Uuid, keep_last_admin: bool) -> StoreResult<ApiKey> {
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            // Touching the organization row serializes revocations within the organization
            // (a row lock on PostgreSQL, the write lock on SQLite), so two concurrent requests
            // cannot each revoke "the other" of the last two admin keys.
            sqlx::query("UPDATE organizations SET updated_at = updated_at WHERE id = $1")
                .bind(self.org).execute(&mut *tx).await?;
            let key: Option<(String, Option<Timestamp>)> =
                sqlx::query_as("SELECT role, revoked_at FROM api_keys WHERE organization_id = $1 AND id = $2")
                    .bind(self.org).bind(id).fetch_optional(&mut *tx).await?;
            let (role, revoked_at) = key.ok_or(StoreError::NotFound)?;
            if keep_last_admin && role == Role::Admin.as_str() && revoked_at.is_none() {
                let others: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE organization_id = $1 AND role = 'admin' AND id <> $2 \
                     AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)")
                    .bind(self.org).bind(id).bind(at).fetch_one(&mut *tx).await?;
                if others == 0 {
                    return Err(StoreError::Conflict(
                        "this is the organization's last admin key; create another admin key first".into(),
                    ));
                }
            }
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).bind(at).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        self.get(id).await
    }
}
