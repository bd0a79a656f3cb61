//! Policy decisions (API §4): the policies that apply to an entity, evaluated in the policy
//! sandbox (bounded child processes, see `cp_policy::sandbox`), so no policy can take the
//! server down.
//!
//! The set of policies of an entity is resolved from the database once per catalog version
//! (policies, associations and contexts move it too, see migration 0009), so a decision costs
//! one primary-key read (the org's mode and version) plus one round trip to a sandbox child,
//! which keeps the policies it was sent compiled. Enforcement decisions go to the decision log through a background writer that
//! stores them in batches: the request never waits for that write.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cp_policy::sandbox::{Pool, SandboxConfig};
use cp_store::Store;
use cp_store::executions::Subject;
use cp_types::bounded::BoundedMap;
use cp_types::context::ContextEntity;
use cp_types::org::PolicyEnforcement;
use cp_types::policy::{PolicyDecision, PolicyOutcome, PolicyResult, ResolvedPolicy, ToolCall};
use cp_types::{ErrorCode, now};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// Most resolved sets kept (a set is rebuilt in a few reads).
const MAX_SETS: usize = 10_000;
/// Decisions stored per transaction by the log writer.
const LOG_BATCH: usize = 512;

/// The policy sandbox, resolved sets and the decision log of the server.
pub struct PolicyEngine {
    sandbox: Pool,
    sets: Mutex<BoundedMap<SetKey, (i64, Arc<PolicySet>)>>,
    log: DecisionLog,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct SetKey {
    org: String,
    entity: ContextEntity,
    environment: Option<Uuid>,
}

/// The policies that apply to one entity (and environment).
pub struct PolicySet {
    pub entity: ContextEntity,
    pub entity_name: String,
    pub policies: Vec<LoadedPolicy>,
}

pub struct LoadedPolicy {
    pub resolved: ResolvedPolicy,
    /// What the sandbox caches its compiled form under.
    key: String,
    /// The Rego text; a stored policy that no longer compiles (say, with a newer engine)
    /// evaluates as an error.
    content: String,
}

/// What the policies of a set said about one input.
pub struct Evaluation {
    /// No violation, no `allow == false` and no error.
    pub allowed: bool,
    pub violations: Vec<String>,
    pub results: BTreeMap<Uuid, PolicyResult>,
    /// The first policy error, if any (an error denies).
    pub error: Option<String>,
}

impl PolicySet {
    /// What each policy said (`verdicts`, in the set's order) folded into one evaluation.
    fn fold(&self, verdicts: Vec<Result<cp_policy::Verdict, String>>) -> Evaluation {
        let mut out = Evaluation {
            allowed: true,
            violations: Vec::new(),
            results: BTreeMap::new(),
            error: None,
        };
        for (p, verdict) in self.policies.iter().zip(verdicts) {
            let result = match verdict {
                Ok(v) => {
                    let allowed = v.allowed();
                    out.allowed &= allowed;
                    out.violations.extend(v.violations.iter().cloned());
                    if v.allow == Some(false) && v.violations.is_empty() {
                        out.violations
                            .push(format!("not allowed by policy '{}'", p.resolved.policy_name));
                    }
                    PolicyResult {
                        policy_name: p.resolved.policy_name.clone(),
                        version: p.resolved.version,
                        allow: v.allow,
                        decision: if allowed {
                            PolicyOutcome::Permit
                        } else {
                            PolicyOutcome::Deny
                        },
                        violations: v.violations,
                        error: None,
                    }
                }
                Err(e) => {
                    out.allowed = false;
                    let message = format!("policy '{}' failed: {e}", p.resolved.policy_name);
                    out.error.get_or_insert_with(|| message.clone());
                    out.violations.push(message);
                    PolicyResult {
                        policy_name: p.resolved.policy_name.clone(),
                        version: p.resolved.version,
                        allow: None,
                        decision: PolicyOutcome::Error,
                        violations: Vec::new(),
                        error: Some(e),
                    }
                }
            };
            out.results.insert(p.resolved.policy_id, result);
        }
        out
    }

    pub fn policy_ids(&self) -> Vec<Uuid> {
        self.policies.iter().map(|p| p.resolved.policy_id).collect()
    }
}

impl PolicyEngine {
    pub fn new(sandbox: SandboxConfig) -> PolicyEngine {
        PolicyEngine {
            sandbox: Pool::new(sandbox),
            sets: Mutex::new(BoundedMap::new(MAX_SETS)),
            log: DecisionLog::default(),
        }
    }

    /// Compiles `content` in the sandbox: its package, or why not (a limit it hit included).
    /// `Err` only when the sandbox itself failed.
    pub async fn compile(
        &self,
        content: &str,
    ) -> Result<Result<String, cp_policy::CompileError>, cp_policy::SandboxError> {
        self.sandbox.compile(content).await
    }

    /// Evaluates every policy of `set` for `input`, all of them within `limit` together. A
    /// policy that errs, runs out of time or makes the sandbox child die is an error, which
    /// denies.
    pub async fn evaluate(&self, set: &PolicySet, input: &Value, limit: Duration) -> Evaluation {
        let policies: Vec<cp_policy::sandbox::Policy<'_>> = set
            .policies
            .iter()
            .map(|p| cp_policy::sandbox::Policy {
                id: &p.key,
                version: p.resolved.version,
                content: &p.content,
            })
            .collect();
        let verdicts = match self.sandbox.evaluate(&policies, input, limit).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                if e.limit.is_none() {
                    tracing::error!(error = %e, "the policy sandbox failed");
                }
                vec![Err(e.message); policies.len()]
            }
        };
        set.fold(verdicts)
    }

    /// The policies that apply to `entity` (and to `environment`, the one an
    /// execution runs in) at catalog `version`. `NotFound` when the entity is unknown.
    pub async fn set(
        &self,
        store: &Store,
        org: &str,
        version: i64,
        entity: &ContextEntity,
        environment: Option<Uuid>,
    ) -> cp_store::StoreResult<Arc<PolicySet>> {
        let key = SetKey {
            org: org.to_string(),
            entity: entity.clone(),
            environment,
        };
        if let Some((v, set)) = self.sets.lock().get(&key)
            && *v == version
        {
            return Ok(set.clone());
        }
        let contexts = store.contexts(org);
        let (applicable, entity_name) = tokio::try_join!(
            store.applicable_policies(org, entity, environment),
            contexts.entity_name(entity),
        )?;
        let policies = applicable
            .into_iter()
            .map(|p| LoadedPolicy {
                key: p.resolved.policy_id.to_string(),
                resolved: p.resolved,
                content: p.content,
            })
            .collect();
        let set = Arc::new(PolicySet {
            entity: entity.clone(),
            entity_name,
            policies,
        });
        // The version was read before the set was built: a racing write makes the entry
        // stale at once, never newer than its content.
        self.sets.lock().insert(key, (version, set.clone()));
        Ok(set)
    }

    /// Waits until every decision recorded so far is stored.
    pub async fn flush_log(&self, store: &Store) {
        self.log.flush(store).await;
    }
}

/// The parts of a policy input document besides the caller, entity and organization.
#[derive(Default)]
pub struct Request {
    pub action: String,
    /// `{id?, prompt, worker_queue_id, environment_id, environment_name, model_id}`.
    pub execution: Option<Value>,
    pub tool: Option<ToolCall>,
    pub resource: Option<Value>,
    pub context: Option<Value>,
}

/// The document Rego sees as `input` (API §10).
pub fn input_document(caller: &Caller, set: &PolicySet, req: &Request) -> Value {
    let mut doc = json!({
        "action": req.action,
        "organization": {"id": caller.org_id, "name": caller.org_name},
        "principal": {"key_id": caller.key_id, "key_name": caller.key_name, "role": caller.role},
        "entity": {"type": set.entity.kind(), "id": set.entity.id(), "name": set.entity_name},
        "resource": req.resource.clone().unwrap_or(Value::Null),
        "context": req.context.clone().unwrap_or_else(|| json!({})),
    });
    if let Some(execution) = &req.execution {
        doc["execution"] = execution.clone();
    }
    if let Some(tool) = &req.tool {
        doc["tool"] = json!({
            "name": tool.name,
            "arguments": tool.arguments,
            "risk_level": tool.risk_level,
            "source": tool.source,
        });
    }
    doc
}

/// The `execution` part of the input for a run of `subject`.
pub fn execution_document(id: Option<Uuid>, prompt: &str, queue: Option<Uuid>, subject: &Subject) -> Value {
    json!({
        "id": id,
        "prompt": prompt,
        "worker_queue_id": queue,
        "environment_id": subject.environment_id,
        "environment_name": subject.environment_name,
        "model_id": subject.model,
    })
}

/// How long all the policies of one decision may take together.
pub const DECISION_LIMIT: Duration = Duration::from_millis(100);

/// Decides `req` for `caller` against `set` under the organization's `mode`, and records the
/// decision unless the mode is `off` (nothing is decided then: everything is allowed).
pub async fn enforce(
    state: &AppState,
    caller: &Caller,
    mode: PolicyEnforcement,
    set: &PolicySet,
    req: &Request,
    execution_id: Option<Uuid>,
) -> PolicyDecision {
    let started = Instant::now();
    let input = input_document(caller, set, req);
    let evaluation = if mode == PolicyEnforcement::Off || set.policies.is_empty() {
        None
    } else {
        Some(state.policies.evaluate(set, &input, DECISION_LIMIT).await)
    };
    let allowed = evaluation.as_ref().is_none_or(|e| e.allowed);
    let decision = PolicyDecision {
        id: Uuid::now_v7(),
        created_at: now(),
        action: req.action.clone(),
        entity_type: set.entity.kind(),
        entity_id: set.entity.id(),
        execution_id,
        tool_name: req.tool.as_ref().map(|t| t.name.clone()),
        key_id: Some(caller.key_id),
        allowed,
        blocked: !allowed && mode == PolicyEnforcement::Blocking,
        mode,
        violations: evaluation.as_ref().map(|e| e.violations.clone()).unwrap_or_default(),
        policies_evaluated: evaluation.as_ref().map_or(0, |e| e.results.len()),
        policy_ids: if evaluation.is_some() {
            set.policy_ids()
        } else {
            Vec::new()
        },
        error: evaluation.and_then(|e| e.error),
        input_digest: hex::encode(Sha256::digest(serde_json::to_vec(&input).unwrap_or_default())),
        latency_us: started.elapsed().as_micros() as i64,
    };
    // An entity without policies, or an org with enforcement off, decided nothing worth a row.
    if decision.policies_evaluated > 0 {
        state
            .policies
            .log
            .record(&state.store, &caller.org_id, decision.clone())
            .await;
    }
    decision
}

/// The 403 of a blocked decision.
pub fn denied(decision: &PolicyDecision, what: &str) -> ServiceError {
    let first = decision
        .violations
        .first()
        .cloned()
        .unwrap_or_else(|| "denied".to_string());
    ServiceError::new(ErrorCode::PolicyDenied, format!("{what} denied by policy: {first}")).with_details(json!({
        "violations": decision.violations,
        "policies_evaluated": decision.policies_evaluated,
        "policy_ids": decision.policy_ids,
        "decision_id": decision.id,
        "mode": decision.mode,
    }))
}

/// The policy check before an execution is queued: 403 `POLICY_DENIED` in blocking mode.
pub async fn check_execute(
    state: &AppState,
    caller: &Caller,
    entity: ContextEntity,
    prompt: &str,
    queue: Option<Uuid>,
    subject: &Subject,
) -> ServiceResult<()> {
    let (mode, version) = subject.policy_state()?;
    if mode == PolicyEnforcement::Off {
        return Ok(());
    }
    let set = state
        .policies
        .set(&state.store, &caller.org_id, version, &entity, subject.environment_id)
        .await?;
    if set.policies.is_empty() {
        return Ok(());
    }
    let req = Request {
        action: "execute".into(),
        execution: Some(execution_document(None, prompt, queue, subject)),
        ..Request::default()
    };
    let decision = enforce(state, caller, mode, &set, &req, None).await;
    if decision.blocked {
        return Err(denied(&decision, "execution"));
    }
    Ok(())
}

/// Writes decisions in batches on a task of its own, started with the first decision. A
/// batch goes to the database as soon as the task takes it (no timer), so a decision is stored
/// within a database write of being made; the server flushes the log before it exits. A
/// denial is stored before it is answered (see `record`).
#[derive(Default)]
struct DecisionLog {
    tx: OnceLock<mpsc::Sender<LogMessage>>,
}

enum LogMessage {
    Decision(String, Box<PolicyDecision>),
    /// Answered once everything sent before it is stored.
    Flush(oneshot::Sender<()>),
}

impl DecisionLog {
    fn sender(&self, store: &Store) -> &mpsc::Sender<LogMessage> {
        self.tx.get_or_init(|| {
            // Bounded: a database that cannot keep up slows decisions down rather than
            // growing memory without end.
            let (tx, rx) = mpsc::channel(8192);
            tokio::spawn(write_log(store.clone(), rx));
            tx
        })
    }

    async fn record(&self, store: &Store, org: &str, decision: PolicyDecision) {
        let denial = !decision.allowed;
        let message = LogMessage::Decision(org.to_string(), Box::new(decision));
        if self.sender(store).send(message).await.is_err() {
            tracing::error!("the policy decision log is closed; a decision was not recorded");
            return;
        }
        // The audit trail a crash must not cut short is the denials': one is in the database
        // before its 403 (or its monitoring-mode answer) leaves.
        if denial {
            self.flush(store).await;
        }
    }

    async fn flush(&self, store: &Store) {
        let (done, wait) = oneshot::channel();
        if self.sender(store).send(LogMessage::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_log(store: Store, mut rx: mpsc::Receiver<LogMessage>) {
    let mut batch = Vec::with_capacity(LOG_BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                LogMessage::Decision(org, d) => batch.push((org, *d)),
                LogMessage::Flush(done) => waiting.push(done),
            }
            next = if batch.len() < LOG_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // A database blip should not lose the batch: a few tries. A batch that still fails
        // is stored row by row, so one row that cannot be (its organization was deleted)
        // loses only itself, not the other decisions of every tenant in the batch.
        if !store_with_retries(&store, &batch, 3).await {
            for row in &batch {
                if !store_with_retries(&store, std::slice::from_ref(row), 2).await {
                    tracing::error!(decision = %row.1.id, org = %row.0, "a policy decision could not be stored");
                }
            }
        }
        batch.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Stores `batch`, trying `tries` times; whether it was stored.
async fn store_with_retries(store: &Store, batch: &[(String, PolicyDecision)], tries: u32) -> bool {
    for attempt in 0..tries {
        match store.record_decisions(batch).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, rows = batch.len(), "storing policy decisions failed");
                if attempt + 1 < tries {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
    }
    false
}
