//! Organizations, their settings and the bootstrap of an empty database.

use cp_types::environment::DEFAULT_ENVIRONMENT_NAME;
use cp_types::org::{OrgSettings, Organization, Role, UpdateOrgSettings};
use cp_types::project::DEFAULT_PROJECT_KEY;
use cp_types::{Timestamp, now};
use uuid::Uuid;

use crate::db::with_db;
use crate::error::{StoreError, StoreResult, parse};
use crate::keys::{NewKey, generate_key, hash_key};
use crate::{Store, keys};

/// The organization created on an empty database.
pub const BOOTSTRAP_ORG: &str = "default";

const INSERT_ORG: &str = "INSERT INTO organizations (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3) \
     ON CONFLICT (id) DO NOTHING RETURNING id";
const INSERT_DEFAULT_PROJECT: &str = "INSERT INTO projects (id, organization_id, name, key, visibility, is_default, \
     created_at, updated_at) VALUES ($1, $2, 'Default', $3, 'org', TRUE, $4, $4)";
const INSERT_DEFAULT_ENV: &str = "INSERT INTO environments (id, organization_id, name, display_name, is_default, \
     created_at, updated_at) VALUES ($1, $2, $3, 'Default Environment', TRUE, $4, $4)";

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: String,
    name: String,
    created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct SettingsRow {
    id: String,
    rate_limit_tier: String,
    rate_limit_per_minute: Option<i64>,
    policy_enforcement: String,
    event_retention_days: i64,
    webhook_allow_private_targets: bool,
    updated_at: Timestamp,
}

impl SettingsRow {
    fn into_settings(self) -> StoreResult<OrgSettings> {
        let tier = parse(&self.rate_limit_tier)?;
        Ok(OrgSettings {
            organization_id: self.id,
            rate_limit_tier: tier,
            rate_limit_per_minute: tier.per_minute(self.rate_limit_per_minute),
            policy_enforcement: parse(&self.policy_enforcement)?,
            event_retention_days: self.event_retention_days,
            webhook_allow_private_targets: self.webhook_allow_private_targets,
            updated_at: self.updated_at,
        })
    }
}

/// What bootstrapping an empty database did.
#[derive(Debug)]
pub struct Bootstrap {
    /// The admin key of org `default`, in clear: only present when this call created it.
    pub admin_key: Option<String>,
    /// Whether the key was generated (rather than taken from the configuration).
    pub generated: bool,
}

impl Store {
    /// Creates an organization with its `DEFAULT` project, `default` environment and built-in models.
    /// An existing slug is a conflict.
    pub async fn create_org(&self, slug: &str, name: &str) -> StoreResult<Organization> {
        self.create_org_with_key(slug, name, None).await
    }

    /// Creates an organization and, in the same transaction, an API key for it.
    async fn create_org_with_key(
        &self,
        slug: &str,
        name: &str,
        key: Option<(&str, Role, &str)>,
    ) -> StoreResult<Organization> {
        let at = now();
        let new_key = key.map(|(secret, role, key_name)| NewKey::new(slug, key_name, role, None, secret, at));
        let created = with_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            let inserted: Option<(String,)> =
                sqlx::query_as(INSERT_ORG).bind(slug).bind(name).bind(at).fetch_optional(&mut *tx).await?;
            if inserted.is_none() {
                return Err(StoreError::Conflict(format!("organization '{slug}' already exists")));
            }
            sqlx::query(INSERT_DEFAULT_PROJECT)
                .bind(Uuid::now_v7()).bind(slug).bind(DEFAULT_PROJECT_KEY).bind(at)
                .execute(&mut *tx).await?;
            sqlx::query(INSERT_DEFAULT_ENV)
                .bind(Uuid::now_v7()).bind(slug).bind(DEFAULT_ENVIRONMENT_NAME).bind(at)
                .execute(&mut *tx).await?;
            crate::models::seed_catalog!(slug, at, tx);
            if let Some(k) = &new_key {
                keys::insert_key!(k, &mut *tx);
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        });
        created?;
        let org = Organization {
            id: slug.to_string(),
            name: name.to_string(),
            created_at: at,
        };
        Ok(org)
    }

    /// On a database without organizations, creates org `default` with an admin key.
    ///
    /// `configured_key` (from `--bootstrap-api-key`) is used when given, else a key is generated.
    /// Concurrent replicas race safely: only the one whose insert wins creates the key.
    pub async fn bootstrap(&self, configured_key: Option<&str>) -> StoreResult<Bootstrap> {
        let count: i64 = with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM organizations").fetch_one(pool).await)?;
        if count > 0 {
            return Ok(Bootstrap {
                admin_key: None,
                generated: false,
            });
        }
        let generated = configured_key.is_none();
        let secret = configured_key.map(str::to_string).unwrap_or_else(generate_key);
        match self
            .create_org_with_key(
                BOOTSTRAP_ORG,
                BOOTSTRAP_ORG,
                Some((&secret, Role::Admin, "bootstrap admin")),
            )
            .await
        {
            Ok(_) => Ok(Bootstrap {
                admin_key: Some(secret),
                generated,
            }),
            // Another replica bootstrapped first.
            Err(StoreError::Conflict(_)) => Ok(Bootstrap {
                admin_key: None,
                generated: false,
            }),
            Err(e) => Err(e),
        }
    }

    pub async fn get_org(&self, slug: &str) -> StoreResult<Organization> {
        let row: OrgRow = with_db!(&self.db, pool =>
            sqlx::query_as("SELECT id, name, created_at FROM organizations WHERE id = $1")
                .bind(slug).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        Ok(Organization {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
        })
    }

    pub async fn org_settings(&self, org: &str) -> StoreResult<OrgSettings> {
        let row: SettingsRow = with_db!(&self.db, pool =>
            sqlx::query_as(SELECT_SETTINGS).bind(org).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_settings()
    }

    /// Applies a partial update of an organization's settings.
    pub async fn update_org_settings(&self, org: &str, patch: &UpdateOrgSettings) -> StoreResult<OrgSettings> {
        let row: SettingsRow = with_db!(&self.db, pool =>
            sqlx::query_as(
                "UPDATE organizations SET \
                   rate_limit_tier = COALESCE($2, rate_limit_tier), \
                   rate_limit_per_minute = COALESCE($3, rate_limit_per_minute), \
                   policy_enforcement = COALESCE($4, policy_enforcement), \
                   event_retention_days = COALESCE($5, event_retention_days), \
                   webhook_allow_private_targets = COALESCE($6, webhook_allow_private_targets), \
                   updated_at = $7 \
                 WHERE id = $1 RETURNING id, rate_limit_tier, rate_limit_per_minute, policy_enforcement, \
                   event_retention_days, webhook_allow_private_targets, updated_at")
                .bind(org)
                .bind(patch.rate_limit_tier.map(|t| t.as_str()))
                .bind(patch.rate_limit_per_minute)
                .bind(patch.policy_enforcement.map(|p| p.as_str()))
                .bind(patch.event_retention_days)
                .bind(patch.webhook_allow_private_targets)
                .bind(now())
                .fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_settings()
    }

    /// Creates an API key from the command line; prints nothing, returns the key in clear.
    pub async fn create_key_for_org(
        &self,
        org: &str,
        name: &str,
        role: Role,
        expires_at: Option<Timestamp>,
    ) -> StoreResult<cp_types::org::CreatedApiKey> {
        self.get_org(org).await?;
        self.keys(org).create(name, role, expires_at, None).await
    }

    /// Whether a key hash exists (used to confirm a configured bootstrap key).
    pub async fn key_exists(&self, secret: &str) -> StoreResult<bool> {
        let n: i64 = with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE key_hash = $1")
                .bind(hash_key(secret)).fetch_one(pool).await)?;
        Ok(n > 0)
    }
}

const SELECT_SETTINGS: &str = "SELECT id, rate_limit_tier, rate_limit_per_minute, policy_enforcement, \
     event_retention_days, webhook_allow_private_targets, updated_at FROM organizations WHERE id = $1";
