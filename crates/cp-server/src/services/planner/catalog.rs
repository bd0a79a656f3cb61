//! What the planner may plan with: the organization's agents and teams (with their skills,
//! tools, models and runtimes), its worker queues and their online workers, its enabled
//! policies and the models' pricing, read in one go.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use cp_store::agents::AgentFilter;
use cp_store::environments::EnvironmentFilter;
use cp_store::models::ModelFilter;
use cp_store::teams::TeamFilter;
use cp_types::agent::{AgentStatus, SkillRef};
use cp_types::bounded::BoundedMap;
use cp_types::model::Model;
use cp_types::page::PageRequest;
use cp_types::skill::{SKILL_NAMED, SkillType, tools_of};
use cp_types::team::TeamStatus;
use cp_types::worker_queue::QueueStatus;
use parking_lot::Mutex;
use uuid::Uuid;

use super::heuristic::Index;

use crate::services::error::ServiceResult;
use crate::state::AppState;

/// Most agents and most teams the planner reads (an organization with more plans over the
/// first ones by name; the prompt shows the best matches of those anyway).
const MOST_ENTITIES: i64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Team,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Team => "team",
        }
    }
}

/// A skill as the planner shows it: what it is and the tools it gives.
#[derive(Debug, Clone)]
pub struct SkillInfo {
    pub name: String,
    pub skill_type: String,
    pub description: Option<String>,
    pub tools: Vec<String>,
}

/// An agent or a team a step may be given to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub kind: Kind,
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub model: Option<String>,
    pub runtime: String,
    pub capabilities: Vec<String>,
    pub skills: Vec<SkillInfo>,
    /// A team's members, by name.
    pub members: Vec<String>,
    /// A team's members, by id.
    pub member_ids: Vec<Uuid>,
}

impl Candidate {
    /// The words the heuristic matches a task against.
    pub fn text(&self) -> String {
        let mut t = format!("{} {}", self.name, self.description.as_deref().unwrap_or_default());
        for c in &self.capabilities {
            t.push(' ');
            t.push_str(c);
        }
        for s in &self.skills {
            t.push_str(&format!(
                " {} {} {}",
                s.name,
                s.skill_type,
                s.description.as_deref().unwrap_or_default()
            ));
            for tool in &s.tools {
                t.push(' ');
                t.push_str(tool);
            }
        }
        for m in &self.members {
            t.push(' ');
            t.push_str(m);
        }
        t
    }
}

#[cfg(test)]
impl Candidate {
    /// An agent with a name and a description only.
    pub fn agent(name: &str, description: &str) -> Candidate {
        Candidate {
            kind: Kind::Agent,
            id: Uuid::now_v7(),
            name: name.into(),
            description: Some(description.into()),
            model: None,
            runtime: "default".into(),
            capabilities: Vec::new(),
            skills: Vec::new(),
            members: Vec::new(),
            member_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub id: Uuid,
    pub name: String,
    pub environment: String,
    pub online_workers: i64,
}

/// What the planner reads of an organization: the entities (kept while its catalog version
/// stays, see [`CatalogCache`]) and its queues (read each time: workers come and go).
#[derive(Clone, Default)]
pub struct Catalog {
    /// Agents first, then teams; each in name order.
    pub candidates: Arc<Vec<Candidate>>,
    /// BM25 over the candidates.
    pub index: Arc<Index>,
    /// Active queues, those with online workers first.
    pub queues: Vec<QueueInfo>,
    /// Enabled policies: name and description.
    pub policies: Arc<Vec<(String, Option<String>)>>,
    /// Models by value.
    pub models: Arc<HashMap<String, Model>>,
}

/// The part of a catalog that only a catalog write changes.
#[derive(Clone)]
struct Entities {
    candidates: Arc<Vec<Candidate>>,
    index: Arc<Index>,
    policies: Arc<Vec<(String, Option<String>)>>,
    models: Arc<HashMap<String, Model>>,
}

/// Each organization's (and project's) entities with the catalog version they were read at.
/// Reading 200 agents with their skills and indexing them is most of a plan's own time; a
/// hit costs one read of the version, which every write of an agent, team, skill, model or
/// policy moves (database triggers), so replicas never plan over each other's stale copy.
pub struct CatalogCache {
    entries: Mutex<BoundedMap<CacheKey, (i64, Entities)>>,
}

/// An organization, and the project its plans are limited to.
type CacheKey = (String, Option<Uuid>);

impl Default for CatalogCache {
    fn default() -> Self {
        CatalogCache {
            entries: Mutex::new(BoundedMap::new(256)),
        }
    }
}

impl Catalog {
    pub fn find(&self, kind: Kind, id: Uuid) -> Option<&Candidate> {
        self.candidates.iter().find(|c| c.kind == kind && c.id == id)
    }

    pub fn has_agent(&self) -> bool {
        self.candidates.iter().any(|c| c.kind == Kind::Agent)
    }

    /// The queue with the most online workers, else the first active one.
    pub fn best_queue(&self) -> Option<&QueueInfo> {
        self.queues.first()
    }
}

fn skill_info(s: &SkillRef) -> SkillInfo {
    let tools = SkillType::from_str(&s.skill_type)
        .map(|ty| {
            tools_of(ty)
                .iter()
                .filter(|t| {
                    t.enabled_by
                        .is_none_or(|flag| s.configuration.get(flag).and_then(|v| v.as_bool()) != Some(false))
                })
                .map(|t| t.name.replace(SKILL_NAMED, &s.name))
                .collect()
        })
        .unwrap_or_default();
    SkillInfo {
        name: s.name.clone(),
        skill_type: s.skill_type.clone(),
        description: s.description.clone(),
        tools,
    }
}

/// Reads the catalog of `org`; with `project`, only that project's agents and teams.
pub async fn load(state: &AppState, org: &str, project: Option<Uuid>) -> ServiceResult<Catalog> {
    let store = &state.store;
    // Read before the entities, so a copy is never kept under a version newer than its data.
    let version = store.catalog_version(org).await?;
    let key = (org.to_owned(), project);
    let cached = state
        .planner_catalogs
        .entries
        .lock()
        .get(&key)
        .filter(|(v, _)| *v == version)
        .map(|(_, e)| e.clone());
    let entities = match cached {
        Some(e) => e,
        None => {
            let e = entities(state, org, project).await?;
            state.planner_catalogs.entries.lock().insert(key, (version, e.clone()));
            e
        }
    };
    let all = PageRequest {
        limit: MOST_ENTITIES,
        offset: 0,
    };
    let (envs, queues) = (store.environments(org), store.worker_queues(org));
    let (envs, queues) = tokio::try_join!(envs.list(EnvironmentFilter::default(), all), queues.list(None, all))?;
    let env_names: HashMap<Uuid, String> = envs.items.into_iter().map(|e| (e.id, e.name)).collect();
    let mut queues: Vec<QueueInfo> = queues
        .items
        .into_iter()
        .filter(|q| q.status == QueueStatus::Active)
        .map(|q| QueueInfo {
            id: q.id,
            environment: env_names.get(&q.environment_id).cloned().unwrap_or_default(),
            name: q.name,
            online_workers: q.active_workers,
        })
        .collect();
    queues.sort_by(|a, b| (-a.online_workers, &a.name, a.id).cmp(&(-b.online_workers, &b.name, b.id)));
    Ok(Catalog {
        candidates: entities.candidates,
        index: entities.index,
        queues,
        policies: entities.policies,
        models: entities.models,
    })
}

/// The agents and teams (and the models and policies) of `org` from the database, indexed.
async fn entities(state: &AppState, org: &str, project: Option<Uuid>) -> ServiceResult<Entities> {
    let all = PageRequest {
        limit: MOST_ENTITIES,
        offset: 0,
    };
    let store = &state.store;
    let agent_filter = AgentFilter {
        project_id: project,
        ..AgentFilter::default()
    };
    let team_filter = TeamFilter {
        project_id: project,
        ..TeamFilter::default()
    };
    let model_filter = ModelFilter::default();
    let (agents, teams, models, policies) = (
        store.agents(org),
        store.teams(org),
        store.models(org),
        store.policies(org),
    );
    let (agents, teams, models, policies) = tokio::try_join!(
        agents.list(agent_filter, all),
        teams.list(team_filter, all),
        models.list(&model_filter, all),
        policies.list(Some(true), all),
    )?;
    let mut candidates: Vec<Candidate> = agents
        .items
        .into_iter()
        .filter(|a| a.status != AgentStatus::Archived)
        .map(|a| Candidate {
            kind: Kind::Agent,
            id: a.id,
            name: a.name,
            description: a.description,
            model: a.model_id,
            runtime: a.runtime.as_str().to_owned(),
            capabilities: a.capabilities,
            skills: a.skills.iter().filter(|s| s.enabled).map(skill_info).collect(),
            members: Vec::new(),
            member_ids: Vec::new(),
        })
        .collect();
    let teams = teams.items.into_iter().filter(|t| t.status == TeamStatus::Active);
    candidates.extend(teams.map(|t| Candidate {
        kind: Kind::Team,
        id: t.id,
        name: t.name,
        description: t.description,
        model: t.model_id,
        runtime: t.runtime.as_str().to_owned(),
        capabilities: Vec::new(),
        skills: t.skills.iter().filter(|s| s.enabled).map(skill_info).collect(),
        members: t.agents.iter().map(|m| m.name.clone()).collect(),
        member_ids: t.agents.iter().map(|m| m.id).collect(),
    }));
    candidates.sort_by(|a, b| (a.kind as u8, &a.name, a.id).cmp(&(b.kind as u8, &b.name, b.id)));
    let index = Index::new(&candidates);
    Ok(Entities {
        candidates: Arc::new(candidates),
        index: Arc::new(index),
        policies: Arc::new(policies.items.into_iter().map(|p| (p.name, p.description)).collect()),
        models: Arc::new(models.items.into_iter().map(|m| (m.value.clone(), m)).collect()),
    })
}
