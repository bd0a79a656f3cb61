//! A claim's run context: everything the worker needs, resolved at claim time (not at execute
//! time), so edits made while the execution waited are honoured.
//!
//! The part that depends only on the agent or team (its row, model, skills, execution
//! environment, the organization's enforcement mode) is cached per entity under the
//! organization's catalog version, which the claim reads in its own transaction: the
//! database's triggers move that version on any write to those tables (and to secrets,
//! integrations and the organization's settings), on every replica. A context that handed
//! out a secret value or integration credential is never served from the cache: each of
//! those reads must land in the access log.

use std::collections::BTreeMap;
use std::sync::Arc;

use cp_store::executions::Claimed;
use cp_store::secrets::{Reader, RunRef};
use cp_store::workers::WorkerSeat;
use cp_types::agent::Agent;
use cp_types::bounded::BoundedMap;
use cp_types::context::ContextEntity;
use cp_types::exec_env::ResolvedExecutionEnvironment;
use cp_types::execution::{Claim, Execution, ExecutionType, RunModel};
use cp_types::org::PolicyEnforcement;
use cp_types::skill::{EntityRef, ResolvedSkill, SkillEntityType};
use cp_types::team::Team;
use cp_types::workflow_run::StepWork;
use parking_lot::Mutex;
use serde_json::{Value, json};
use uuid::Uuid;

use super::exec_env::{self, Target};
use super::{knowledge, vault};
use crate::services::caller::Caller;
use crate::services::error::{ServiceError, ServiceResult};
use crate::state::AppState;

/// Most entities whose context is kept; past it the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// What an agent or team contributes to every claim of it.
#[derive(Debug, Clone)]
struct EntityContext {
    agent: Option<Agent>,
    team: Option<Team>,
    members: Vec<Agent>,
    member_models: BTreeMap<String, RunModel>,
    member_skills: BTreeMap<Uuid, Vec<ResolvedSkill>>,
    system_prompt: Option<String>,
    model: Option<RunModel>,
    skills: Vec<ResolvedSkill>,
    environment: ResolvedExecutionEnvironment,
    policy_enforcement: PolicyEnforcement,
    /// The knowledge items and graph nodes the entity's resolved context names.
    knowledge: Vec<Uuid>,
    resources: Vec<Uuid>,
}

impl EntityContext {
    /// True when building it read no secret value or credential (nothing to record again).
    fn handed_out_nothing(&self) -> bool {
        self.model.as_ref().is_none_or(|m| m.api_key.is_none())
            && self.member_models.values().all(|m| m.api_key.is_none())
            && self.environment.secrets.is_empty()
            && self.environment.integration_ids.is_empty()
    }
}

/// An entity's context and the catalog version it was built at.
type Versioned = (i64, Arc<EntityContext>);

/// Entity contexts by (organization, entity).
pub struct RunContextCache {
    entries: Mutex<BoundedMap<(String, Uuid), Versioned>>,
}

impl Default for RunContextCache {
    fn default() -> Self {
        RunContextCache {
            entries: Mutex::new(BoundedMap::new(MAX_ENTRIES)),
        }
    }
}

impl RunContextCache {
    fn get(&self, org: &str, entity: Uuid, version: i64) -> Option<Arc<EntityContext>> {
        let entries = self.entries.lock();
        match entries.get(&(org.to_owned(), entity)) {
            Some((v, ctx)) if *v == version => Some(ctx.clone()),
            _ => None,
        }
    }

    fn put(&self, org: &str, entity: Uuid, version: i64, ctx: Arc<EntityContext>) {
        self.entries.lock().insert((org.to_owned(), entity), (version, ctx));
    }
}

/// The claim handed to the worker for what `claimed` took.
pub async fn build(state: &AppState, worker: &Caller, claimed: Claimed, seat: WorkerSeat) -> ServiceResult<Claim> {
    let org = worker.org_id.as_str();
    let execution = claimed.changed.record.execution;
    let lease_id = claimed.changed.record.lease_id.unwrap_or_default();
    let step = step_work(&execution);
    if let Some(work @ (StepWork::Command { .. } | StepWork::Http { .. })) = step {
        // A command or request of a workflow: no agent, model or skills to resolve.
        let settings = state.store.org_settings(org).await?;
        return Ok(Claim {
            lease_id: lease_id.uuid(),
            lease_seconds: seat.lease_ms() / 1000,
            system_prompt: None,
            env_vars: execution.execution_environment.env_vars.clone(),
            execution,
            agent: None,
            team: None,
            members: Vec::new(),
            member_models: BTreeMap::new(),
            member_skills: BTreeMap::new(),
            model: None,
            skills: Vec::new(),
            environment: ResolvedExecutionEnvironment::default(),
            policy_enforcement: settings.policy_enforcement,
            history: claimed.history,
            step: Some(work),
        });
    }
    let entity = match state
        .run_contexts
        .get(org, execution.entity_id, claimed.catalog_version)
    {
        Some(ctx) => ctx,
        None => {
            let ctx = Arc::new(resolve(state, worker, &execution).await?);
            if ctx.handed_out_nothing() {
                state
                    .run_contexts
                    .put(org, execution.entity_id, claimed.catalog_version, ctx.clone());
            }
            ctx
        }
    };
    let ctx = Arc::unwrap_or_clone(entity);
    let system_prompt = knowledge::run::with_context(
        state,
        org,
        execution.system_prompt.clone().or(ctx.system_prompt),
        &ctx.knowledge,
        &ctx.resources,
        &execution.prompt,
    )
    .await?;
    let mut env_vars = ctx.environment.env_vars.clone();
    env_vars.extend(execution.execution_environment.env_vars.clone());
    Ok(Claim {
        lease_id: lease_id.uuid(),
        lease_seconds: seat.lease_ms() / 1000,
        system_prompt,
        execution,
        agent: ctx.agent,
        team: ctx.team,
        members: ctx.members,
        member_models: ctx.member_models,
        member_skills: ctx.member_skills,
        model: ctx.model,
        skills: ctx.skills,
        environment: ctx.environment,
        env_vars,
        policy_enforcement: ctx.policy_enforcement,
        history: claimed.history,
        step,
    })
}

/// Reads and resolves what an agent or team contributes to a claim.
async fn resolve(state: &AppState, worker: &Caller, execution: &Execution) -> ServiceResult<EntityContext> {
    let entity_id = execution.entity_id;
    let team_run = execution.execution_type == ExecutionType::Team || step_work(execution) == Some(StepWork::Team);
    let org = worker.org_id.as_str();
    let store = &state.store;
    let (agent, team, members, target, skills_of, model_ref, system_prompt, llm_config) = match team_run {
        true => {
            let team = store
                .teams(org)
                .get(entity_id)
                .await
                .map_err(|e| ServiceError::from_store(e, "team"))?;
            // One query for all members (the agent list filtered by team), then member order.
            let mut members = store.agents(org).team_members(team.id).await?;
            members.sort_by_key(|a| team.agents.iter().position(|m| m.id == a.id));
            let prompt = team
                .configuration
                .get("instructions")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let model = team.model_id.clone();
            let llm = team.configuration.get("llm").cloned().unwrap_or_else(|| json!({}));
            let target = Target::Team(team.id);
            let entity = EntityRef {
                kind: SkillEntityType::Team,
                id: team.id,
            };
            (None, Some(team), members, target, entity, model, prompt, llm)
        }
        false => {
            let agent = store
                .agents(org)
                .get(entity_id)
                .await
                .map_err(|e| ServiceError::from_store(e, "agent"))?;
            let prompt = agent.system_prompt.clone();
            let model = agent.model_id.clone();
            let llm = agent.llm_config.clone();
            let target = Target::Agent(agent.id);
            let entity = EntityRef {
                kind: SkillEntityType::Agent,
                id: agent.id,
            };
            (Some(agent), None, Vec::new(), target, entity, model, prompt, llm)
        }
    };
    // The access logs name the run and who started it, not only the worker's key.
    let run = RunRef {
        execution_id: execution.id,
        started_by: store.executions(org).started_by(execution.id).await.ok().flatten(),
    };
    let reader = Reader {
        key_id: worker.key_id,
        key_name: &worker.key_name,
        role: worker.role,
        purpose: "execution",
        run: Some(run),
    };
    // Independent reads, run side by side: the claim's latency is the slowest of them, not
    // their sum.
    let model = async {
        match model_ref {
            Some(value) => run_model(state, worker, &value, llm_config).await.map(Some),
            None => Ok(None),
        }
    };
    let skills = async { Ok::<_, ServiceError>(store.skills(org).resolved(skills_of).await?) };
    let environment = async {
        Ok::<_, ServiceError>(exec_env::resolve(store, &state.config.master_key, org, target, Some(reader)).await?)
    };
    let settings = async { Ok::<_, ServiceError>(store.org_settings(org).await?) };
    let context_of = match skills_of.kind {
        SkillEntityType::Team => ContextEntity::Team(skills_of.id),
        _ => ContextEntity::Agent(skills_of.id),
    };
    let context = async { Ok::<_, ServiceError>(store.contexts(org).resolve(&context_of).await?) };
    // A team's members run on their own models with their own skills, read side by side.
    let member_models = async {
        let mut values: Vec<String> = members.iter().filter_map(|a| a.model_id.clone()).collect();
        values.sort();
        values.dedup();
        let found =
            futures::future::try_join_all(values.iter().map(|v| run_model(state, worker, v, json!({})))).await?;
        Ok::<_, ServiceError>(values.into_iter().zip(found).collect::<BTreeMap<_, _>>())
    };
    let member_skill_repo = store.skills(org);
    let member_skills = async {
        let resolved = futures::future::try_join_all(members.iter().map(|a| {
            member_skill_repo.resolved(EntityRef {
                kind: SkillEntityType::Agent,
                id: a.id,
            })
        }))
        .await?;
        Ok::<_, ServiceError>(members.iter().map(|a| a.id).zip(resolved).collect::<BTreeMap<_, _>>())
    };
    let (model, skills, environment, settings, member_models, member_skills, context) = tokio::try_join!(
        model,
        skills,
        environment,
        settings,
        member_models,
        member_skills,
        context
    )?;
    // Contexts saved before ids were checked may hold other strings: those name nothing.
    let ids = |list: &[String]| {
        list.iter()
            .filter_map(|s| Uuid::parse_str(s.trim()).ok())
            .collect::<Vec<_>>()
    };
    Ok(EntityContext {
        agent,
        team,
        members,
        member_models,
        member_skills,
        system_prompt,
        model,
        skills,
        environment,
        policy_enforcement: settings.policy_enforcement,
        knowledge: ids(&context.knowledge_uuids),
        resources: ids(&context.resource_ids),
    })
}

/// What a workflow step's execution does, from its metadata (`None` for other executions).
fn step_work(execution: &Execution) -> Option<StepWork> {
    execution.workflow_run_id?;
    serde_json::from_value(execution.execution_metadata.get("workflow_step")?.clone()).ok()
}

async fn run_model(state: &AppState, worker: &Caller, value: &str, llm_config: Value) -> ServiceResult<RunModel> {
    let m = state
        .store
        .models(&worker.org_id)
        .find(value)
        .await
        .map_err(|e| ServiceError::from_store(e, "model"))?;
    // A key that is not stored as a secret may live on the worker host instead (the worker
    // looks up the variable named by `api_key_secret`): not a reason to refuse the run.
    let api_key = match &m.api_key_secret {
        Some(name) => match vault::read_secret(state, worker, name).await {
            Ok(secret) => Some(secret.value),
            Err(e) if e.code == cp_types::ErrorCode::NotFound => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let provider_model = m.provider_model_name().to_owned();
    Ok(RunModel {
        id: m.id,
        value: m.value,
        provider: m.provider,
        provider_model,
        base_url: m.base_url,
        api_key,
        api_key_secret: m.api_key_secret,
        llm_config,
        pricing: m.pricing,
    })
}
