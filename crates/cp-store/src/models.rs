//! The model catalog of an organization, and the built-in models a new organization starts with.

use cp_types::model::{CreateModel, Model, ModelType, Pricing, UpdateModel, default_runtimes};
use cp_types::page::PageRequest;
use cp_types::runtime::Runtime;
use cp_types::{Page, Timestamp, now};
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;

macro_rules! model_columns {
    () => {
        "id, organization_id, value, label, provider, provider_model, model_type, description, logo, enabled, \
         recommended, is_default, compatible_runtimes, capabilities, pricing, context_window, base_url, \
         api_key_secret, display_order, created_at, updated_at"
    };
}

pub(crate) const INSERT_MODEL: &str = concat!(
    "INSERT INTO models (",
    model_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20)"
);

#[derive(sqlx::FromRow)]
struct ModelRow {
    id: Uuid,
    organization_id: String,
    value: String,
    label: String,
    provider: String,
    provider_model: Option<String>,
    model_type: String,
    description: Option<String>,
    logo: Option<String>,
    enabled: bool,
    recommended: bool,
    is_default: bool,
    compatible_runtimes: Json<Vec<Runtime>>,
    capabilities: Json<Value>,
    pricing: Option<Json<Pricing>>,
    context_window: Option<i64>,
    base_url: Option<String>,
    api_key_secret: Option<String>,
    display_order: i64,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl ModelRow {
    fn into_model(self) -> StoreResult<Model> {
        Ok(Model {
            id: self.id,
            organization_id: self.organization_id,
            value: self.value,
            label: self.label,
            provider: self.provider,
            provider_model: self.provider_model,
            model_type: parse(&self.model_type)?,
            description: self.description,
            logo: self.logo,
            enabled: self.enabled,
            recommended: self.recommended,
            is_default: self.is_default,
            compatible_runtimes: self.compatible_runtimes.0,
            capabilities: self.capabilities.0,
            pricing: self.pricing.map(|p| p.0),
            context_window: self.context_window,
            base_url: self.base_url,
            api_key_secret: self.api_key_secret,
            display_order: self.display_order,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A row to insert (a seed or a create request, normalized).
pub(crate) struct NewModel {
    pub(crate) id: Uuid,
    pub(crate) value: String,
    pub(crate) label: String,
    pub(crate) provider: String,
    pub(crate) provider_model: Option<String>,
    pub(crate) model_type: ModelType,
    pub(crate) description: Option<String>,
    pub(crate) logo: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) recommended: bool,
    pub(crate) is_default: bool,
    pub(crate) compatible_runtimes: Vec<Runtime>,
    pub(crate) capabilities: Value,
    pub(crate) pricing: Option<Pricing>,
    pub(crate) context_window: Option<i64>,
    pub(crate) base_url: Option<String>,
    pub(crate) api_key_secret: Option<String>,
    pub(crate) display_order: i64,
}

fn seed(
    value: &str,
    label: &str,
    provider: &str,
    pricing: (f64, f64),
    context_window: i64,
    order: i64,
    description: &str,
) -> NewModel {
    NewModel {
        id: Uuid::now_v7(),
        value: value.into(),
        label: label.into(),
        provider: provider.into(),
        provider_model: None,
        model_type: ModelType::TextGeneration,
        description: Some(description.into()),
        logo: None,
        enabled: true,
        recommended: false,
        is_default: false,
        compatible_runtimes: default_runtimes(value, provider),
        capabilities: json!({"tool_calling": true, "streaming": true}),
        pricing: Some(Pricing {
            input_per_1k: pricing.0,
            output_per_1k: pricing.1,
        }),
        context_window: Some(context_window),
        base_url: None,
        api_key_secret: None,
        display_order: order,
    }
}

/// The catalog a new organization starts with: Claude Sonnet 4.5 (the default), a smaller
/// Claude, two OpenAI models and a local OpenAI-compatible server (Ollama's default address).
pub(crate) fn seed_models() -> Vec<NewModel> {
    let mut sonnet = seed(
        "anthropic/claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "anthropic",
        (0.003, 0.015),
        200_000,
        1,
        "Anthropic's balanced model for agents and coding.",
    );
    sonnet.recommended = true;
    sonnet.is_default = true;
    sonnet.capabilities = json!({"tool_calling": true, "streaming": true, "vision": true, "thinking": true});
    sonnet.api_key_secret = Some("ANTHROPIC_API_KEY".into());
    let mut haiku = seed(
        "anthropic/claude-haiku-4-5",
        "Claude Haiku 4.5",
        "anthropic",
        (0.001, 0.005),
        200_000,
        2,
        "Anthropic's fast, low-cost model.",
    );
    haiku.api_key_secret = Some("ANTHROPIC_API_KEY".into());
    let mut gpt = seed(
        "openai/gpt-4.1",
        "GPT-4.1",
        "openai",
        (0.002, 0.008),
        1_047_576,
        10,
        "OpenAI's flagship GPT model for tool use.",
    );
    gpt.api_key_secret = Some("OPENAI_API_KEY".into());
    let mut mini = seed(
        "openai/gpt-4.1-mini",
        "GPT-4.1 mini",
        "openai",
        (0.0004, 0.0016),
        1_047_576,
        11,
        "OpenAI's small, fast GPT model.",
    );
    mini.api_key_secret = Some("OPENAI_API_KEY".into());
    let mut local = seed(
        "ollama/llama3.1",
        "Llama 3.1 (local)",
        "ollama",
        (0.0, 0.0),
        128_000,
        50,
        "A model served by a local OpenAI-compatible server such as Ollama.",
    );
    local.base_url = Some("http://127.0.0.1:11434/v1".into());
    vec![sonnet, haiku, gpt, mini, local]
}

/// Binds a [`NewModel`] to the model insert and runs it on `$exec` (a pool or a transaction).
macro_rules! insert_model {
    ($m:expr, $org:expr, $at:expr, $exec:expr) => {
        sqlx::query($crate::models::INSERT_MODEL)
            .bind($m.id)
            .bind($org)
            .bind(&$m.value)
            .bind(&$m.label)
            .bind(&$m.provider)
            .bind(&$m.provider_model)
            .bind($m.model_type.as_str())
            .bind(&$m.description)
            .bind(&$m.logo)
            .bind($m.enabled)
            .bind($m.recommended)
            .bind($m.is_default)
            .bind(sqlx::types::Json(&$m.compatible_runtimes))
            .bind(sqlx::types::Json(&$m.capabilities))
            .bind($m.pricing.map(sqlx::types::Json))
            .bind($m.context_window)
            .bind(&$m.base_url)
            .bind(&$m.api_key_secret)
            .bind($m.display_order)
            .bind($at)
            .execute($exec)
            .await
    };
}
pub(crate) use insert_model;

/// Inserts the built-in catalog inside a new organization's creation transaction.
macro_rules! seed_catalog {
    ($org:expr, $at:expr, $tx:expr) => {
        for m in $crate::models::seed_models() {
            $crate::models::insert_model!(m, $org, $at, &mut *$tx)?;
        }
    };
}
pub(crate) use seed_catalog;

/// Filters of `GET /models`.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    pub enabled_only: bool,
    /// Lowercase provider name.
    pub provider: Option<String>,
    pub runtime: Option<Runtime>,
    pub recommended: Option<bool>,
}

impl Store {
    /// The model catalog of one organization.
    pub fn models<'a>(&'a self, org: &'a str) -> Models<'a> {
        Models { db: &self.db, org }
    }

    /// The organizations with an enabled embedding model: those whose knowledge is embedded.
    pub async fn orgs_with_embedding_models(&self) -> StoreResult<Vec<String>> {
        Ok(with_db!(&self.db, pool =>
            sqlx::query_scalar("SELECT DISTINCT organization_id FROM models WHERE model_type = 'embedding' AND enabled \
                ORDER BY organization_id")
                .fetch_all(pool).await)?)
    }
}

/// The model catalog of one organization.
pub struct Models<'a> {
    db: &'a Db,
    org: &'a str,
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "model", &["value"])
}

/// The `GET /models` filters ($1 org, $2 enabled only, $3 provider, $4 runtime pattern, $5 recommended).
macro_rules! model_filter {
    () => {
        " WHERE organization_id = $1 AND ($2 = FALSE OR enabled) AND ($3 IS NULL OR provider = $3) \
          AND ($4 IS NULL OR CAST(compatible_runtimes AS TEXT) LIKE $4) AND ($5 IS NULL OR recommended = $5)"
    };
}

impl Models<'_> {
    /// Models in display order, then by value.
    pub async fn list(&self, filter: &ModelFilter, page: PageRequest) -> StoreResult<Page<Model>> {
        // Runtimes are enum values, so matching the quoted name in the JSON text is exact.
        let runtime = filter.runtime.map(|r| format!("%\"{}\"%", r.as_str()));
        let rows: Vec<ModelRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", model_columns!(), " FROM models", model_filter!(),
                " ORDER BY display_order, value LIMIT $6 OFFSET $7"))
                .bind(self.org).bind(filter.enabled_only).bind(&filter.provider).bind(&runtime)
                .bind(filter.recommended).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM models", model_filter!()))
                    .bind(self.org).bind(filter.enabled_only).bind(&filter.provider).bind(&runtime)
                    .bind(filter.recommended).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, ModelRow::into_model).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Model> {
        let row: ModelRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", model_columns!(), " FROM models WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_model()
    }

    /// A model by its id or its value (`anthropic/claude-sonnet-4-5`).
    pub async fn find(&self, id_or_value: &str) -> StoreResult<Model> {
        if let Ok(id) = Uuid::parse_str(id_or_value) {
            match self.get(id).await {
                Err(StoreError::NotFound) => {}
                other => return other,
            }
        }
        let row: ModelRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", model_columns!(), " FROM models WHERE organization_id = $1 AND value = $2"))
                .bind(self.org).bind(id_or_value).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_model()
    }

    /// The organization's default model.
    pub async fn default_model(&self) -> StoreResult<Model> {
        let row: ModelRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", model_columns!(), " FROM models WHERE organization_id = $1 AND is_default"))
                .bind(self.org).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_model()
    }

    /// The model that embeds the organization's knowledge: its enabled embedding model, the
    /// default one first, then in display order.
    pub async fn embedding_model(&self) -> StoreResult<Option<Model>> {
        let row: Option<ModelRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", model_columns!(), " FROM models WHERE organization_id = $1 \
                AND model_type = 'embedding' AND enabled ORDER BY is_default DESC, display_order, value LIMIT 1"))
                .bind(self.org).fetch_optional(pool).await)?;
        row.map(ModelRow::into_model).transpose()
    }

    /// The distinct providers of the catalog, alphabetically.
    pub async fn providers(&self, page: PageRequest) -> StoreResult<Page<String>> {
        let rows: Vec<(String,)> = with_db!(self.db, pool =>
            sqlx::query_as("SELECT DISTINCT provider FROM models WHERE organization_id = $1 ORDER BY provider \
                LIMIT $2 OFFSET $3")
                .bind(self.org).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(DISTINCT provider) FROM models WHERE organization_id = $1")
                    .bind(self.org).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, |(p,)| Ok(p)).await
    }

    pub async fn create(&self, req: &CreateModel) -> StoreResult<Model> {
        let value = req.value.trim().to_string();
        let provider = req.provider.trim().to_ascii_lowercase();
        let m = NewModel {
            id: Uuid::now_v7(),
            compatible_runtimes: req
                .compatible_runtimes
                .clone()
                .unwrap_or_else(|| default_runtimes(&value, &provider)),
            value,
            label: req.label.trim().to_string(),
            provider,
            provider_model: req.provider_model.clone(),
            model_type: req.model_type.unwrap_or_default(),
            description: req.description.clone(),
            logo: req.logo.clone(),
            enabled: req.enabled.unwrap_or(true),
            recommended: req.recommended.unwrap_or(false),
            is_default: req.is_default.unwrap_or(false),
            capabilities: req.capabilities.clone().unwrap_or_else(|| json!({})),
            pricing: req.pricing,
            context_window: req.context_window,
            base_url: req.base_url.clone(),
            api_key_secret: req.api_key_secret.clone(),
            display_order: req.display_order.unwrap_or(1000),
        };
        let at = now();
        with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            if m.is_default {
                sqlx::query("UPDATE models SET is_default = FALSE, updated_at = $2 WHERE organization_id = $1 AND is_default")
                    .bind(self.org).bind(at).execute(&mut *tx).await?;
            }
            insert_model!(m, self.org, at, &mut *tx).map_err(conflict)?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        self.get(m.id).await
    }

    /// Applies a partial update; making a model the default takes the flag from the previous one.
    pub async fn update(&self, id: Uuid, req: &UpdateModel) -> StoreResult<Model> {
        let current = self.get(id).await?;
        if current.is_default && req.is_default == Some(false) {
            return Err(StoreError::Conflict(
                "this is the organization's default model: make another model the default instead".into(),
            ));
        }
        let becomes_default = req.is_default == Some(true);
        if (current.is_default || becomes_default) && req.enabled == Some(false) {
            return Err(StoreError::Conflict("the default model cannot be disabled".into()));
        }
        let at = now();
        let updated = with_db!(self.db, pool => {
            let mut tx = pool.begin().await?;
            if becomes_default && !current.is_default {
                sqlx::query("UPDATE models SET is_default = FALSE, updated_at = $2 WHERE organization_id = $1 AND is_default")
                    .bind(self.org).bind(at).execute(&mut *tx).await?;
            }
            let n = sqlx::query(
                "UPDATE models SET \
                   value = COALESCE($3, value), \
                   label = COALESCE($4, label), \
                   provider = COALESCE($5, provider), \
                   provider_model = CASE WHEN $6 THEN $7 ELSE provider_model END, \
                   model_type = COALESCE($8, model_type), \
                   description = CASE WHEN $9 THEN $10 ELSE description END, \
                   logo = CASE WHEN $11 THEN $12 ELSE logo END, \
                   enabled = COALESCE($13, enabled), \
                   recommended = COALESCE($14, recommended), \
                   is_default = is_default OR $15, \
                   compatible_runtimes = COALESCE($16, compatible_runtimes), \
                   capabilities = COALESCE($17, capabilities), \
                   pricing = CASE WHEN $18 THEN $19 ELSE pricing END, \
                   context_window = CASE WHEN $20 THEN $21 ELSE context_window END, \
                   base_url = CASE WHEN $22 THEN $23 ELSE base_url END, \
                   api_key_secret = CASE WHEN $24 THEN $25 ELSE api_key_secret END, \
                   display_order = COALESCE($26, display_order), \
                   updated_at = $27 \
                 WHERE organization_id = $1 AND id = $2")
                .bind(self.org)
                .bind(id)
                .bind(req.value.as_deref().map(str::trim))
                .bind(req.label.as_deref().map(str::trim))
                .bind(req.provider.as_deref().map(|p| p.trim().to_ascii_lowercase()))
                .bind(req.provider_model.is_some())
                .bind(req.provider_model.clone().flatten())
                .bind(req.model_type.map(|t| t.as_str()))
                .bind(req.description.is_some())
                .bind(req.description.clone().flatten())
                .bind(req.logo.is_some())
                .bind(req.logo.clone().flatten())
                .bind(req.enabled)
                .bind(req.recommended)
                .bind(becomes_default)
                .bind(req.compatible_runtimes.as_ref().map(Json))
                .bind(req.capabilities.as_ref().map(Json))
                .bind(req.pricing.is_some())
                .bind(req.pricing.flatten().map(Json))
                .bind(req.context_window.is_some())
                .bind(req.context_window.flatten())
                .bind(req.base_url.is_some())
                .bind(req.base_url.clone().flatten())
                .bind(req.api_key_secret.is_some())
                .bind(req.api_key_secret.clone().flatten())
                .bind(req.display_order)
                .bind(at)
                .execute(&mut *tx).await.map_err(conflict)?.rows_affected();
            tx.commit().await?;
            Ok::<_, StoreError>(n)
        })?;
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        self.get(id).await
    }

    /// Deletes a model that is neither the default nor used by an agent or team.
    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let model = self.get(id).await?;
        if model.is_default {
            return Err(StoreError::Conflict(
                "the default model cannot be deleted: make another model the default first".into(),
            ));
        }
        let users: i64 = with_db!(self.db, pool =>
            sqlx::query_scalar("SELECT (SELECT COUNT(*) FROM agents WHERE model_id = $1) \
                + (SELECT COUNT(*) FROM teams WHERE model_id = $1)")
                .bind(id).fetch_one(pool).await)?;
        if users > 0 {
            return Err(StoreError::Conflict(format!(
                "model '{}' is used by {users} agent(s) or team(s): point them at another model first",
                model.value
            )));
        }
        with_db!(self.db, pool =>
            sqlx::query("DELETE FROM models WHERE organization_id = $1 AND id = $2 AND NOT is_default")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(in_use)?;
        Ok(())
    }
}

/// A model deleted while an agent started using it: the foreign key refuses, answer 409.
fn in_use(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_foreign_key_violation()
    {
        return StoreError::Conflict("the model is in use by an agent or team".into());
    }
    e.into()
}
