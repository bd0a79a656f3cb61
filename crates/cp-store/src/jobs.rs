//! Jobs and their firings.
//!
//! A scheduled firing is claimed by moving the job's `next_run_at` on with an update that
//! names the value it read, in the transaction that writes the firing: of several replicas
//! that see the same due time, one update matches and the others change nothing. A firing is
//! written `pending` with a lease for the replica that starts it; the execution or run it
//! starts has the firing's id, so a replica that takes over an expired lease after a crash
//! finds what was already started instead of starting it twice.

use cp_types::ids::OrgId;
use cp_types::job::{Job, JobFiring, JobSpec, JobStatus, JobTrigger, TriggerSource};
use cp_types::page::PageRequest;
use cp_types::{Page, Timestamp, now};
use serde_json::{Value, json};
use sqlx::types::Json;
use uuid::Uuid;

use crate::Store;
use crate::db::{Db, with_db, write_tx};
use crate::error::{StoreError, StoreResult, parse};
use crate::page::page_of;
use crate::webhooks::enqueue_webhooks;

macro_rules! job_columns {
    () => {
        "id, organization_id, enabled, spec, entity_name, status, paused_reason, next_run_at, next_due_at, last_run_at, \
         last_status, consecutive_failures, webhook_path, created_by, created_by_name, created_by_role, created_at, \
         updated_at"
    };
}

macro_rules! firing_columns {
    () => {
        "f.id, f.job_id, f.organization_id, f.trigger_source, f.status, f.work, f.execution_id, f.workflow_run_id, \
         f.due_at, f.fired_at, f.error, f.missed_count, f.delivery_id, e.status AS execution_status, \
         r.status AS run_status"
    };
}

macro_rules! firing_joins {
    () => {
        " FROM job_firings f LEFT JOIN executions e ON e.id = f.execution_id \
          LEFT JOIN workflow_runs r ON r.id = f.workflow_run_id"
    };
}

macro_rules! job_filter {
    () => {
        " WHERE organization_id = $1 AND ($2 IS NULL OR enabled = $2) AND ($3 IS NULL OR trigger_type = $3)"
    };
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    organization_id: String,
    /// The server pauses a job through this column alone: it wins over the spec's copy.
    enabled: bool,
    spec: Json<JobSpec>,
    entity_name: String,
    status: String,
    paused_reason: Option<String>,
    next_run_at: Option<i64>,
    next_due_at: Option<i64>,
    last_run_at: Option<Timestamp>,
    last_status: Option<String>,
    consecutive_failures: i64,
    webhook_path: Option<String>,
    created_by: String,
    created_by_name: String,
    created_by_role: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// A job found by its webhook path, with its sealed secret.
#[derive(sqlx::FromRow)]
struct HookRow {
    #[sqlx(flatten)]
    job: JobRow,
    webhook_secret: Option<Vec<u8>>,
}

/// A job with what the server keeps about it besides the API's view.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub job: Job,
    /// The key that wrote the job: its firings act for it.
    pub created_by_name: String,
    pub created_by_role: String,
    /// Unix ms of the due time `next_run_at` fires for (without jitter).
    pub next_due_at: Option<i64>,
}

impl JobRow {
    fn into_record(self) -> StoreResult<JobRecord> {
        let trigger = self.spec.0.trigger_type;
        let mut spec = self.spec.0;
        spec.enabled = self.enabled;
        Ok(JobRecord {
            job: Job {
                id: self.id,
                organization_id: self.organization_id,
                spec,
                entity_name: self.entity_name,
                status: parse::<JobStatus>(&self.status)?,
                paused_reason: self.paused_reason,
                next_run_at: self.next_run_at.and_then(chrono::DateTime::from_timestamp_millis),
                last_run_at: self.last_run_at,
                last_status: self.last_status,
                consecutive_failures: self.consecutive_failures,
                webhook_path: self.webhook_path.filter(|_| trigger == JobTrigger::Webhook),
                webhook_url: None,
                created_by: self.created_by,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
            created_by_name: self.created_by_name,
            created_by_role: self.created_by_role,
            next_due_at: self.next_due_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct FiringRow {
    id: Uuid,
    job_id: Uuid,
    organization_id: String,
    trigger_source: String,
    status: String,
    work: Option<Json<Value>>,
    execution_id: Option<Uuid>,
    workflow_run_id: Option<Uuid>,
    due_at: Option<i64>,
    fired_at: Timestamp,
    error: Option<String>,
    missed_count: Option<i64>,
    delivery_id: Option<String>,
    execution_status: Option<String>,
    run_status: Option<String>,
}

/// A firing with the rendered work it starts.
#[derive(Debug, Clone)]
pub struct FiringRecord {
    pub firing: JobFiring,
    pub organization_id: String,
    /// `{prompt}` for an agent or team, `{inputs}` for a workflow.
    pub work: Option<Value>,
    /// The stored status (`started` while what it started runs).
    pub stored_status: String,
}

impl FiringRow {
    fn into_record(self) -> StoreResult<FiringRecord> {
        let status = match (self.status.as_str(), self.execution_status, self.run_status) {
            ("started", Some(s), _) | ("started", None, Some(s)) => s,
            _ => self.status.clone(),
        };
        Ok(FiringRecord {
            firing: JobFiring {
                id: self.id,
                job_id: self.job_id,
                trigger_source: parse::<TriggerSource>(&self.trigger_source)?,
                status,
                execution_id: self.execution_id,
                workflow_run_id: self.workflow_run_id,
                due_at: self.due_at.and_then(chrono::DateTime::from_timestamp_millis),
                fired_at: self.fired_at,
                error: self.error,
                missed_count: self.missed_count,
                delivery_id: self.delivery_id,
            },
            organization_id: self.organization_id,
            work: self.work.map(|w| w.0),
            stored_status: self.status,
        })
    }
}

/// What a write of a job sets besides its definition.
#[derive(Debug, Clone)]
pub struct JobDraft {
    pub spec: JobSpec,
    pub entity_name: String,
    pub status: JobStatus,
    pub next_run_at: Option<i64>,
    pub next_due_at: Option<i64>,
    /// Clears the failure count and the pause reason (an enable).
    pub fresh_start: bool,
    /// An update writes the schedule, and `enabled` and `status`, only when it changed them:
    /// a claim or a pause made since the job was read stays.
    pub rescheduled: bool,
    pub enabled_changed: bool,
}

/// The key a job acts for.
#[derive(Debug, Clone)]
pub struct Author {
    pub key_id: Uuid,
    pub name: String,
    pub role: String,
}

/// A firing to write.
#[derive(Debug, Clone)]
pub struct NewFiring {
    pub id: Uuid,
    pub source: TriggerSource,
    /// `pending` (leased to its writer), `buffered`, `skipped`, `missed` or `failed`.
    pub status: &'static str,
    pub work: Option<Value>,
    pub due_at: Option<i64>,
    pub error: Option<String>,
    pub missed_count: Option<i64>,
    pub delivery_id: Option<String>,
    pub lease_until: Option<i64>,
}

/// How a firing's start ended.
#[derive(Debug, Clone)]
pub enum Started {
    Execution {
        id: Uuid,
        status: String,
    },
    Run {
        id: Uuid,
        status: String,
    },
    /// Nothing started: `skipped` or `failed`, with the reason.
    Not {
        status: &'static str,
        reason: String,
    },
}

fn conflict(e: sqlx::Error) -> StoreError {
    StoreError::unique(e, "job", &["name"])
}

impl Store {
    /// The jobs of one organization.
    pub fn jobs<'a>(&'a self, org: &'a str) -> Jobs<'a> {
        Jobs { db: &self.db, org }
    }

    /// The job a webhook path belongs to, with its sealed secret, in any organization.
    pub async fn job_by_webhook_path(&self, path: &str) -> StoreResult<(JobRecord, Option<Vec<u8>>)> {
        let row: Option<HookRow> = with_db!(&self.db, pool =>
            sqlx::query_as(concat!("SELECT ", job_columns!(), ", webhook_secret FROM jobs WHERE webhook_path = $1"))
                .bind(path).fetch_optional(pool).await)?;
        let row = row.ok_or(StoreError::NotFound)?;
        Ok((row.job.into_record()?, row.webhook_secret))
    }

    /// Enabled jobs whose `next_run_at` has come: `(organization, job, next_run_at)`.
    pub async fn due_jobs(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<(OrgId, Uuid, i64)>> {
        let rows: Vec<(String, Uuid, i64)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT organization_id, id, next_run_at FROM jobs \
                 WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2")
                .bind(now_ms).bind(limit).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(o, id, at)| (OrgId(o), id, at)).collect())
    }

    /// Firings to start: buffered ones (their turn may have come) and pending ones whose
    /// writer's lease ran out (it stopped before it started them).
    pub async fn waiting_firings(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<(OrgId, Uuid)>> {
        let rows: Vec<(String, Uuid)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT organization_id, id FROM job_firings \
                 WHERE (status = 'pending' OR status = 'buffered') AND (lease_until IS NULL OR lease_until < $1) \
                 ORDER BY id LIMIT $2")
                .bind(now_ms).bind(limit).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(o, id)| (OrgId(o), id)).collect())
    }

    /// Started firings whose execution or run has ended: `(organization, firing, status)`.
    pub async fn ended_firings(&self, limit: i64) -> StoreResult<Vec<(OrgId, Uuid, String)>> {
        let rows: Vec<(String, Uuid, String)> = with_db!(&self.db, pool =>
            sqlx::query_as(
                "SELECT f.organization_id, f.id, COALESCE(e.status, r.status, 'failed') FROM job_firings f \
                 LEFT JOIN executions e ON e.id = f.execution_id LEFT JOIN workflow_runs r ON r.id = f.workflow_run_id \
                 WHERE f.status = 'started' AND (COALESCE(e.status, r.status) IS NULL \
                   OR COALESCE(e.status, r.status) IN ('completed', 'failed', 'cancelled')) LIMIT $1")
                .bind(limit).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(o, id, s)| (OrgId(o), id, s)).collect())
    }
}

/// The jobs of one organization.
pub struct Jobs<'a> {
    db: &'a Db,
    org: &'a str,
}

impl Jobs<'_> {
    /// Newest first, optionally only enabled (or disabled) ones, or one trigger type.
    pub async fn list(
        &self,
        enabled: Option<bool>,
        trigger: Option<JobTrigger>,
        page: PageRequest,
    ) -> StoreResult<Page<JobRecord>> {
        let trigger = trigger.map(JobTrigger::as_str);
        let rows: Vec<JobRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM jobs", job_filter!(), " ORDER BY id DESC LIMIT $4 OFFSET $5"))
                .bind(self.org).bind(enabled).bind(trigger).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar(concat!("SELECT COUNT(*) FROM jobs", job_filter!()))
                    .bind(self.org).bind(enabled).bind(trigger).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, JobRow::into_record).await
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<JobRecord> {
        let row: JobRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", job_columns!(), " FROM jobs WHERE organization_id = $1 AND id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_record()
    }

    /// Stores a new job (at most `max` per organization); a webhook job comes with its path
    /// and sealed secret.
    pub async fn create(
        &self,
        id: Uuid,
        draft: &JobDraft,
        webhook: Option<(&str, &[u8])>,
        by: &Author,
        max: i64,
    ) -> StoreResult<JobRecord> {
        let at = now();
        let (path, secret) = webhook.unzip();
        let row: JobRow = write_tx!(self.db, tx, _pg => {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE organization_id = $1")
                .bind(self.org).fetch_one(&mut *tx).await?;
            if count >= max {
                return Err(StoreError::Conflict(format!("an organization may have at most {max} jobs")));
            }
            sqlx::query_as(concat!(
                "INSERT INTO jobs (id, organization_id, name, trigger_type, enabled, spec, entity_name, status, \
                   next_run_at, next_due_at, consecutive_failures, webhook_path, webhook_secret, created_by, \
                   created_by_name, created_by_role, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, $15, $16, $16) RETURNING ",
                job_columns!()))
                .bind(id).bind(self.org).bind(draft.spec.name.trim()).bind(draft.spec.trigger_type.as_str())
                .bind(draft.spec.enabled).bind(Json(&draft.spec)).bind(&draft.entity_name).bind(draft.status.as_str())
                .bind(draft.next_run_at).bind(draft.next_due_at).bind(path).bind(secret)
                .bind(by.key_id.to_string()).bind(&by.name).bind(&by.role).bind(at)
                .fetch_one(&mut *tx).await.map_err(conflict)?
        });
        row.into_record()
    }

    /// Replaces a job's definition (and its schedule and state, where `draft` changed them);
    /// `webhook` gives it a path and secret (a job that became a webhook job and had none).
    /// The job acts for `by` from now on.
    pub async fn update(
        &self,
        id: Uuid,
        draft: &JobDraft,
        webhook: Option<(&str, &[u8])>,
        by: &Author,
    ) -> StoreResult<JobRecord> {
        let (path, secret) = webhook.unzip();
        let row: Option<JobRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "UPDATE jobs SET name = $3, trigger_type = $4, spec = $6, entity_name = $7, \
                   enabled = CASE WHEN $16 THEN $5 ELSE enabled END, \
                   status = CASE WHEN $16 THEN $8 ELSE status END, \
                   next_run_at = CASE WHEN $15 THEN $9 ELSE next_run_at END, \
                   next_due_at = CASE WHEN $15 THEN $10 ELSE next_due_at END, \
                   consecutive_failures = CASE WHEN $11 THEN 0 ELSE consecutive_failures END, \
                   paused_reason = CASE WHEN $11 THEN NULL ELSE paused_reason END, \
                   webhook_path = COALESCE($12, webhook_path), webhook_secret = COALESCE($13, webhook_secret), \
                   created_by = $17, created_by_name = $18, created_by_role = $19, updated_at = $14 \
                 WHERE organization_id = $1 AND id = $2 RETURNING ", job_columns!()))
                .bind(self.org).bind(id).bind(draft.spec.name.trim()).bind(draft.spec.trigger_type.as_str())
                .bind(draft.spec.enabled).bind(Json(&draft.spec)).bind(&draft.entity_name).bind(draft.status.as_str())
                .bind(draft.next_run_at).bind(draft.next_due_at).bind(draft.fresh_start).bind(path).bind(secret)
                .bind(now()).bind(draft.rescheduled).bind(draft.enabled_changed)
                .bind(by.key_id.to_string()).bind(&by.name).bind(&by.role)
                .fetch_optional(pool).await.map_err(conflict))?;
        row.ok_or(StoreError::NotFound)?.into_record()
    }

    pub async fn delete(&self, id: Uuid) -> StoreResult<()> {
        let n = with_db!(self.db, pool =>
            sqlx::query("DELETE FROM jobs WHERE organization_id = $1 AND id = $2")
                .bind(self.org).bind(id).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// A new webhook secret (sealed); the path stays.
    pub async fn set_secret(&self, id: Uuid, sealed: &[u8]) -> StoreResult<JobRecord> {
        let row: Option<JobRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!(
                "UPDATE jobs SET webhook_secret = $3, updated_at = $4 \
                 WHERE organization_id = $1 AND id = $2 AND webhook_path IS NOT NULL RETURNING ", job_columns!()))
                .bind(self.org).bind(id).bind(sealed).bind(now()).fetch_optional(pool).await)?;
        row.ok_or(StoreError::NotFound)?.into_record()
    }

    /// Claims the due time `run_at` of a cron job: moves its schedule on to `next` and writes
    /// `firings` (the one that fires, missed ones) in one transaction, unless another replica
    /// moved the schedule first (`false`).
    pub async fn claim_due(
        &self,
        id: Uuid,
        run_at: i64,
        next: (Option<i64>, Option<i64>),
        firings: &[NewFiring],
        job_name: &str,
    ) -> StoreResult<bool> {
        let at = now();
        Ok(write_tx!(self.db, tx, pg => {
            let moved = sqlx::query(
                "UPDATE jobs SET next_run_at = $4, next_due_at = $5 \
                 WHERE organization_id = $1 AND id = $2 AND enabled AND next_run_at = $3")
                .bind(self.org).bind(id).bind(run_at).bind(next.0).bind(next.1)
                .execute(&mut *tx).await?.rows_affected();
            if moved == 1 {
                for f in firings {
                    // A due time fired already (a schedule an update set back) stays fired once.
                    insert_firing!(self.org, id, f, at, " ON CONFLICT (job_id, due_at) DO NOTHING")
                        .execute(&mut *tx).await?;
                    if f.status == "missed" {
                        let data = json!({
                            "job_id": id, "job_name": job_name, "firing_id": f.id, "missed_count": f.missed_count,
                            "reason": f.error,
                        });
                        enqueue_webhooks!(tx, pg, self.org, "job.missed", data);
                    }
                }
            }
            moved == 1
        }))
    }

    /// Writes a manual or webhook firing; `None` when the webhook delivery fired already.
    pub async fn add_firing(&self, job: Uuid, f: &NewFiring) -> StoreResult<Option<FiringRecord>> {
        let at = now();
        let inserted = with_db!(self.db, pool => insert_firing!(self.org, job, f, at, "").execute(pool).await.map(|r| r.rows_affected()));
        match inserted {
            Ok(_) => Ok(Some(self.firing(f.id).await?)),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn firing(&self, id: Uuid) -> StoreResult<FiringRecord> {
        let row: FiringRow = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", firing_columns!(), firing_joins!(), " WHERE f.organization_id = $1 AND f.id = $2"))
                .bind(self.org).bind(id).fetch_optional(pool).await)?
        .ok_or(StoreError::NotFound)?;
        row.into_record()
    }

    /// A job's firings, newest first.
    pub async fn firings(&self, job: Uuid, page: PageRequest) -> StoreResult<Page<JobFiring>> {
        self.get(job).await?;
        let rows: Vec<FiringRow> = with_db!(self.db, pool =>
            sqlx::query_as(concat!("SELECT ", firing_columns!(), firing_joins!(),
                " WHERE f.organization_id = $1 AND f.job_id = $2 ORDER BY f.id DESC LIMIT $3 OFFSET $4"))
                .bind(self.org).bind(job).bind(page.limit).bind(page.offset).fetch_all(pool).await)?;
        let count = async {
            Ok(with_db!(self.db, pool =>
                sqlx::query_scalar("SELECT COUNT(*) FROM job_firings WHERE organization_id = $1 AND job_id = $2")
                    .bind(self.org).bind(job).fetch_one(pool).await)?)
        };
        page_of(rows, page, count, |r| r.into_record().map(|r| r.firing)).await
    }

    /// Takes a waiting firing for `until_ms` (`false`: another replica has it, or it moved on).
    pub async fn lease(&self, firing: Uuid, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
        let n = with_db!(self.db, pool =>
            sqlx::query(
                "UPDATE job_firings SET lease_until = $4 WHERE organization_id = $1 AND id = $2 \
                 AND status IN ('pending', 'buffered') AND (lease_until IS NULL OR lease_until < $3)")
                .bind(self.org).bind(firing).bind(now_ms).bind(until_ms).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Lets a buffered firing wait on: any replica may look again.
    pub async fn release(&self, firing: Uuid) -> StoreResult<()> {
        with_db!(self.db, pool =>
            sqlx::query("UPDATE job_firings SET lease_until = NULL WHERE organization_id = $1 AND id = $2 AND status = 'buffered'")
                .bind(self.org).bind(firing).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Whether another firing of the job is waiting (buffered) or has started something
    /// still going. An earlier firing still being started (pending, its lease live at
    /// `now_ms`) counts as going: of two firings started side by side, the later one waits.
    pub async fn busy(&self, job: Uuid, except: Uuid, now_ms: i64) -> StoreResult<(bool, bool)> {
        let (active, buffered): (i64, i64) = with_db!(self.db, pool =>
            sqlx::query_as(
                "SELECT \
                   COALESCE(SUM(CASE WHEN (f.status = 'started' AND COALESCE(e.status, r.status) NOT IN \
                     ('completed', 'failed', 'cancelled')) \
                     OR (f.status = 'pending' AND f.id < $3 AND f.lease_until >= $4) THEN 1 ELSE 0 END), 0), \
                   COALESCE(SUM(CASE WHEN f.status = 'buffered' THEN 1 ELSE 0 END), 0) \
                 FROM job_firings f LEFT JOIN executions e ON e.id = f.execution_id \
                   LEFT JOIN workflow_runs r ON r.id = f.workflow_run_id \
                 WHERE f.organization_id = $1 AND f.job_id = $2 AND f.id <> $3 \
                   AND f.status IN ('started', 'buffered', 'pending')")
                .bind(self.org).bind(job).bind(except).bind(now_ms).fetch_one(pool).await)?;
        Ok((active > 0, buffered > 0))
    }

    /// Turns a pending firing into a buffered one.
    pub async fn buffer(&self, firing: Uuid) -> StoreResult<()> {
        with_db!(self.db, pool =>
            sqlx::query("UPDATE job_firings SET status = 'buffered', lease_until = NULL \
                         WHERE organization_id = $1 AND id = $2 AND status = 'pending'")
                .bind(self.org).bind(firing).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Records how a firing's start ended, on the firing and on its job (last run and status,
    /// failures in a row, a pause at `pause_after` of them), with its `job.fired` event.
    pub async fn finish(
        &self,
        firing: &FiringRecord,
        job_name: &str,
        started: &Started,
        pause_after: Option<i64>,
    ) -> StoreResult<FiringRecord> {
        let (status, execution, run, error): (&str, Option<Uuid>, Option<Uuid>, Option<&str>) = match started {
            Started::Execution { id, .. } => ("started", Some(*id), None, None),
            Started::Run { id, .. } => ("started", None, Some(*id), None),
            Started::Not { status, reason } => (status, None, None, Some(reason.as_str())),
        };
        let shown = match started {
            Started::Execution { status, .. } | Started::Run { status, .. } => status.as_str(),
            Started::Not { status, .. } => status,
        };
        let f = &firing.firing;
        write_tx!(self.db, tx, pg => {
            let n = sqlx::query(
                "UPDATE job_firings SET status = $3, execution_id = $4, workflow_run_id = $5, error = $6, lease_until = NULL \
                 WHERE organization_id = $1 AND id = $2 AND status IN ('pending', 'buffered')")
                .bind(self.org).bind(f.id).bind(status).bind(execution).bind(run).bind(error)
                .execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                let failed = status == "failed";
                bump_job!(tx, self.org, f.job_id, shown, failed, false, pause_after, Some(f.fired_at));
                let data = json!({
                    "job_id": f.job_id, "job_name": job_name, "firing_id": f.id,
                    "trigger_source": f.trigger_source, "status": shown, "execution_id": execution,
                    "workflow_run_id": run, "error": error, "due_at": f.due_at,
                });
                enqueue_webhooks!(tx, pg, self.org, "job.fired", data.clone());
                if failed {
                    let message = format!(
                        "job '{job_name}' fired ({}) but started nothing: {}",
                        f.trigger_source,
                        error.unwrap_or_default()
                    );
                    let alert = json!({"kind": "job_failed", "message": message, "job_id": f.job_id, "firing": data});
                    enqueue_webhooks!(tx, pg, self.org, "error", alert);
                }
            }
        });
        self.firing(f.id).await
    }

    /// Records the end of what a started firing started, on the firing and its job.
    pub async fn settle(&self, firing: Uuid, ended: &str, pause_after: Option<i64>) -> StoreResult<()> {
        let never: Option<Timestamp> = None;
        write_tx!(self.db, tx, _pg => {
            let job: Option<Uuid> = sqlx::query_scalar(
                "UPDATE job_firings SET status = $3 WHERE organization_id = $1 AND id = $2 AND status = 'started' \
                 RETURNING job_id")
                .bind(self.org).bind(firing).bind(ended).fetch_optional(&mut *tx).await?;
            if let Some(job) = job {
                let (failed, succeeded) = (ended == "failed", ended == "completed");
                bump_job!(tx, self.org, job, ended, failed, succeeded, pause_after, never);
            }
        });
        Ok(())
    }
}

/// The insert of `$f` as a firing of job `$job`, with `$on_conflict` (a clause, or "").
macro_rules! insert_firing {
    ($org:expr, $job:expr, $f:expr, $at:expr, $on_conflict:literal) => {
        sqlx::query(concat!(
            "INSERT INTO job_firings (id, job_id, organization_id, trigger_source, status, work, due_at, fired_at, \
               error, missed_count, delivery_id, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            $on_conflict
        ))
        .bind($f.id)
        .bind($job)
        .bind($org)
        .bind($f.source.as_str())
        .bind($f.status)
        .bind($f.work.as_ref().map(Json))
        .bind($f.due_at)
        .bind($at)
        .bind(&$f.error)
        .bind($f.missed_count)
        .bind(&$f.delivery_id)
        .bind($f.lease_until)
    };
}
use insert_firing;

/// Records a firing's outcome on its job: the last status, the failures in a row (reset by a
/// success), and a pause once they reach `$pause_after`.
macro_rules! bump_job {
    ($tx:ident, $org:expr, $job:expr, $status:expr, $failed:expr, $succeeded:expr, $pause_after:expr, $ran_at:expr) => {
        sqlx::query(
            "UPDATE jobs SET last_status = $3, last_run_at = COALESCE($7, last_run_at), \
               consecutive_failures = CASE WHEN $4 THEN consecutive_failures + 1 WHEN $5 THEN 0 \
                 ELSE consecutive_failures END, \
               enabled = CASE WHEN $4 AND $6 IS NOT NULL AND consecutive_failures + 1 >= $6 THEN $8 ELSE enabled END, \
               status = CASE WHEN $4 AND $6 IS NOT NULL AND consecutive_failures + 1 >= $6 THEN 'paused' ELSE status END, \
               next_run_at = CASE WHEN $4 AND $6 IS NOT NULL AND consecutive_failures + 1 >= $6 THEN NULL \
                 ELSE next_run_at END, \
               paused_reason = CASE WHEN $4 AND $6 IS NOT NULL AND consecutive_failures + 1 >= $6 \
                 THEN 'paused after ' || ($6) || ' failed firings in a row' ELSE paused_reason END \
             WHERE organization_id = $1 AND id = $2",
        )
        .bind($org)
        .bind($job)
        .bind($status)
        .bind($failed)
        .bind($succeeded)
        .bind($pause_after)
        .bind($ran_at)
        .bind(false)
        .execute(&mut *$tx)
        .await?
    };
}
use bump_job;
