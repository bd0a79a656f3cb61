//! The policy decision log: every enforcement decision, written in batches by the server's
//! decision logger and read back filtered and paginated.

use cp_types::page::PageRequest;
use cp_types::policy::{DecisionFilter, PolicyDecision};
use cp_types::{Page, Timestamp};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{with_db, write_tx};
use crate::error::{StoreResult, parse};
use crate::page::page_of;
use crate::webhooks::enqueue_webhooks;

macro_rules! decision_columns {
    () => {
        "id, created_at, action, entity_type, entity_id, execution_id, tool_name, key_id, allowed, blocked, mode, \
         violations, policy_ids, error, input_digest, latency_us"
    };
}

macro_rules! decision_filter {
    () => {
        " WHERE organization_id = $1 AND ($2 IS NULL OR entity_id = $2) AND ($3 IS NULL OR execution_id = $3) \
         AND ($4 IS NULL OR allowed = $4) AND ($5 IS NULL OR action = $5) AND ($6 IS NULL OR created_at >= $6)"
    };
}

#[derive(sqlx::FromRow)]
struct DecisionRow {
    id: Uuid,
    created_at: Timestamp,
    action: String,
    entity_type: String,
    entity_id: String,
    execution_id: Option<Uuid>,
    tool_name: Option<String>,
    key_id: Option<Uuid>,
    allowed: bool,
    blocked: bool,
    mode: String,
    violations: Json<Vec<String>>,
    policy_ids: Json<Vec<Uuid>>,
    error: Option<String>,
    input_digest: String,
    latency_us: i64,
}

impl DecisionRow {
    fn into_decision(self) -> StoreResult<PolicyDecision> {
        Ok(PolicyDecision {
            id: self.id,
            created_at: self.created_at,
            action: self.action,
            entity_type: parse(&self.entity_type)?,
            entity_id: self.entity_id,
            execution_id: self.execution_id,
            tool_name: self.tool_name,
            key_id: self.key_id,
            allowed: self.allowed,
            blocked: self.blocked,
            mode: parse(&self.mode)?,
            violations: self.violations.0,
            policies_evaluated: self.policy_ids.0.len(),
            policy_ids: self.policy_ids.0,
            error: self.error,
            input_digest: self.input_digest,
            latency_us: self.latency_us,
        })
    }
}

impl Store {
    /// Stores a batch of decisions (of any organizations) in one transaction.
    pub async fn record_decisions(&self, batch: &[(String, PolicyDecision)]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        write_tx!(&self.db, tx, pg => {
            for (org, d) in batch {
                sqlx::query(concat!("INSERT INTO policy_decisions (organization_id, ", decision_columns!(), ") \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"))
                    .bind(org).bind(d.id).bind(d.created_at).bind(&d.action).bind(d.entity_type.as_str())
                    .bind(&d.entity_id).bind(d.execution_id).bind(&d.tool_name).bind(d.key_id).bind(d.allowed)
                    .bind(d.blocked).bind(d.mode.as_str()).bind(Json(&d.violations)).bind(Json(&d.policy_ids))
                    .bind(&d.error).bind(&d.input_digest).bind(d.latency_us)
                    .execute(&mut *tx).await?;
                if !d.allowed {
                    // Written with the decision it reports: no denial without its webhook.
                    let data = serde_json::json!({"decision": d});
                    enqueue_webhooks!(tx, pg, org.as_str(), "policy.denied", data);
                }
            }
        });
        Ok(())
    }

    /// One organization's decisions, newest first.
    pub async fn policy_decisions(
        &self,
        org: &str,
        filter: &DecisionFilter,
        page: PageRequest,
    ) -> StoreResult<Page<PolicyDecision>> {
        let rows: Vec<DecisionRow> = with_db!(&self.db, pool =>
            sqlx::query_as(concat!("SELECT ", decision_columns!(), " FROM policy_decisions", decision_filter!(),
                " ORDER BY id DESC LIMIT $7 OFFSET $8"))
                .bind(org).bind(&filter.entity_id).bind(filter.execution_id).bind(filter.allowed)
                .bind(&filter.action).bind(filter.since).bind(page.limit).bind(page.offset)
                .fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(&self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM policy_decisions", decision_filter!()))
                    .bind(org).bind(&filter.entity_id).bind(filter.execution_id).bind(filter.allowed)
                    .bind(&filter.action).bind(filter.since).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, DecisionRow::into_decision).await
    }
}
