//! Usage and cost of an organization's executions: one grouped statement per report, with
//! the duration percentiles taken by window functions (SQLite has no percentile aggregate).

use cp_types::Timestamp;
use cp_types::analytics::{UsageGroup, UsageItem};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::db::{Db, with_db};
use crate::{Store, StoreResult};

impl Store {
    /// The analytics of one organization.
    pub fn analytics<'a>(&'a self, org: &'a str) -> Analytics<'a> {
        Analytics { db: &self.db, org }
    }
}

pub struct Analytics<'a> {
    db: &'a Db,
    org: &'a str,
}

#[derive(sqlx::FromRow)]
struct UsageRow {
    key_id: Option<Uuid>,
    key_text: Option<String>,
    name: Option<String>,
    runs: i64,
    failures: i64,
    // Sums are taken in floating point: a run's reported usage is a worker's word, and an
    // absurd figure must not overflow the report into an error.
    prompt_tokens: f64,
    completion_tokens: f64,
    total_tokens: f64,
    cost_usd: f64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
}

/// The parts of the statement each database spells its own way.
struct Dialect {
    prompt_tokens: &'static str,
    completion_tokens: &'static str,
    total_tokens: &'static str,
    cost: &'static str,
    duration_ms: &'static str,
    day: &'static str,
    null_id: &'static str,
    null_text: &'static str,
    /// A float sum of a column (SQLite's TOTAL never overflows; PostgreSQL sums float8).
    sum_open: &'static str,
    sum_close: &'static str,
}

const SQLITE: Dialect = Dialect {
    prompt_tokens: "COALESCE(json_extract(e.usage, '$.prompt_tokens'), 0)",
    completion_tokens: "COALESCE(json_extract(e.usage, '$.completion_tokens'), 0)",
    total_tokens: "COALESCE(json_extract(e.usage, '$.total_tokens'), 0)",
    cost: "CAST(COALESCE(json_extract(e.usage, '$.cost_usd'), 0) AS REAL)",
    duration_ms: "(julianday(e.completed_at) - julianday(e.started_at)) * 86400000.0",
    day: "substr(e.created_at, 1, 10)",
    null_id: "NULL",
    null_text: "NULL",
    sum_open: "TOTAL(",
    sum_close: ")",
};

const POSTGRES: Dialect = Dialect {
    prompt_tokens: "COALESCE((e.usage->>'prompt_tokens')::bigint, 0)",
    completion_tokens: "COALESCE((e.usage->>'completion_tokens')::bigint, 0)",
    total_tokens: "COALESCE((e.usage->>'total_tokens')::bigint, 0)",
    cost: "COALESCE((e.usage->>'cost_usd')::float8, 0)",
    duration_ms: "(EXTRACT(EPOCH FROM e.completed_at - e.started_at) * 1000)::float8",
    day: "to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    null_id: "NULL::uuid",
    null_text: "NULL::text",
    sum_open: "SUM(CAST(",
    sum_close: " AS DOUBLE PRECISION))",
};

/// The report's statement. Agent and team rows count the workflow steps that ran an agent or
/// team still in the catalog (a step names its agent only by id).
fn usage_sql(d: &Dialect, group: UsageGroup) -> String {
    let (key_id, key_text, name, join, only) = match group {
        UsageGroup::Agent => (
            "e.entity_id",
            d.null_text,
            "COALESCE(x.name, e.entity_name)",
            "LEFT JOIN agents x ON x.organization_id = e.organization_id AND x.id = e.entity_id",
            "AND (e.execution_type = 'agent' OR (e.execution_type = 'workflow_step' AND x.id IS NOT NULL))",
        ),
        UsageGroup::Team => (
            "e.entity_id",
            d.null_text,
            "COALESCE(x.name, e.entity_name)",
            "LEFT JOIN teams x ON x.organization_id = e.organization_id AND x.id = e.entity_id",
            "AND (e.execution_type = 'team' OR (e.execution_type = 'workflow_step' AND x.id IS NOT NULL))",
        ),
        UsageGroup::Model => (
            "e.model_id",
            d.null_text,
            "x.label",
            "LEFT JOIN models x ON x.organization_id = e.organization_id AND x.id = e.model_id",
            "AND e.model_id IS NOT NULL",
        ),
        UsageGroup::Day => (d.null_id, d.day, d.day, "", ""),
    };
    let order = match group {
        UsageGroup::Day => "key_text",
        _ => "runs DESC, name, key_id",
    };
    format!(
        "WITH runs AS (\
           SELECT {key_id} AS key_id, {key_text} AS key_text, {name} AS name, e.status, \
             {pt} AS pt, {ct} AS ct, {tt} AS tt, {cost} AS cost, \
             CASE WHEN e.status IN ('completed', 'failed', 'cancelled') AND e.started_at IS NOT NULL \
               AND e.completed_at IS NOT NULL THEN {dur} END AS dur \
           FROM executions e {join} \
           WHERE e.organization_id = $1 AND e.created_at >= $2 AND e.created_at < $3 {only}), \
         ranked AS (\
           SELECT runs.*, ROW_NUMBER() OVER (PARTITION BY key_id, key_text ORDER BY dur IS NULL, dur) AS rn, \
             COUNT(dur) OVER (PARTITION BY key_id, key_text) AS n FROM runs) \
         SELECT key_id, key_text, MAX(name) AS name, COUNT(*) AS runs, \
           CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failures, \
           {so}pt{sc} AS prompt_tokens, {so}ct{sc} AS completion_tokens, {so}tt{sc} AS total_tokens, \
           {so}cost{sc} AS cost_usd, \
           MIN(CASE WHEN dur IS NOT NULL AND rn >= 0.5 * n THEN dur END) AS p50_ms, \
           MIN(CASE WHEN dur IS NOT NULL AND rn >= 0.95 * n THEN dur END) AS p95_ms \
         FROM ranked GROUP BY key_id, key_text ORDER BY {order}",
        pt = d.prompt_tokens,
        ct = d.completion_tokens,
        tt = d.total_tokens,
        cost = d.cost,
        dur = d.duration_ms,
        so = d.sum_open,
        sc = d.sum_close,
    )
}

impl Analytics<'_> {
    /// Runs, failures, tokens, cost and duration percentiles of the executions created in
    /// `[since, until)`, one item per `group`.
    pub async fn usage(&self, group: UsageGroup, since: Timestamp, until: Timestamp) -> StoreResult<Vec<UsageItem>> {
        let dialect = match self.db {
            Db::Sqlite(..) => &SQLITE,
            Db::Postgres(..) => &POSTGRES,
        };
        // Built from constant parts only: the group picks among them.
        let sql = usage_sql(dialect, group);
        let rows: Vec<UsageRow> = with_db!(self.db, pool =>
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(self.org).bind(since).bind(until).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let key = r.key_id.map(|id| id.to_string()).or(r.key_text).unwrap_or_default();
                UsageItem {
                    name: r.name.unwrap_or_else(|| key.clone()),
                    key,
                    runs: r.runs,
                    failures: r.failures,
                    // `as` saturates: a sum past i64 reads as i64::MAX.
                    prompt_tokens: r.prompt_tokens as i64,
                    completion_tokens: r.completion_tokens as i64,
                    total_tokens: r.total_tokens as i64,
                    cost_usd: r.cost_usd,
                    p50_ms: r.p50_ms,
                    p95_ms: r.p95_ms,
                }
            })
            .collect())
    }
}

/// An endpoint whose deliveries fail, or that the server disabled.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct FailingWebhook {
    pub id: Uuid,
    pub url: String,
    pub disabled_reason: Option<String>,
    /// Deliveries given up on, and ones failing and still retried, in the window.
    pub failed: i64,
    pub retrying: i64,
    pub last_error: Option<String>,
}

impl Analytics<'_> {
    /// How many executions created since `since` are in each status.
    pub async fn runs_by_status(&self, since: Timestamp) -> StoreResult<Vec<(String, i64)>> {
        Ok(with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM executions \
                 WHERE organization_id = $1 AND created_at >= $2 GROUP BY status ORDER BY status")
                .bind(self.org).bind(since).fetch_all(pool).await)?)
    }

    /// Endpoints with deliveries that failed or are being retried since `since` (a delivery's
    /// last attempt), and disabled ones, most failures first, with their latest error.
    pub async fn failing_webhooks(&self, since: Timestamp, limit: i64) -> StoreResult<Vec<FailingWebhook>> {
        Ok(with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT w.id, w.url, w.disabled_reason, \
                   CAST(COALESCE(SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed, \
                   CAST(COALESCE(SUM(CASE WHEN d.status = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS retrying, \
                   (SELECT l.last_error FROM webhook_deliveries l WHERE l.webhook_id = w.id \
                      AND l.last_error IS NOT NULL ORDER BY l.updated_at DESC LIMIT 1) AS last_error \
                 FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id AND d.updated_at >= $2 \
                   AND (d.status = 'failed' OR (d.status = 'pending' AND d.attempts > 0)) \
                 WHERE w.organization_id = $1 GROUP BY w.id, w.url, w.disabled_reason \
                 HAVING COUNT(d.id) > 0 OR w.disabled_reason IS NOT NULL \
                 ORDER BY failed DESC, retrying DESC, w.url LIMIT $3")
                .bind(self.org).bind(since).bind(limit).fetch_all(pool).await)?)
    }
}
