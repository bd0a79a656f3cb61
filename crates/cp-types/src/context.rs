//! Context: knowledge, resources, policies and variables attached to an organization, project,
//! environment, team or agent, and their resolution along the chain (API §3, Context row).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};
use chrono::{DateTime, Utc};

/// Most entries one list of a context may hold.
pub const MAX_CONTEXT_ENTRIES: usize = 1000;
/// Longest entry of a context list, in characters.
pub const MAX_CONTEXT_ENTRY_CHARS: usize = 512;

wire_enum! {
    /// What a context is attached to; also the name of a layer of a resolved context.
    ContextEntityType {
        Organization = "organization",
        Project = "project",
        Environment = "environment",
        Team = "team",
        Agent = "agent",
    }
}

/// The entity a context belongs to: the organization by its slug, the others by their UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContextEntity {
    Organization(String),
    Project(Uuid),
    Environment(Uuid),
    Team(Uuid),
    Agent(Uuid),
}

impl ContextEntity {
    /// Reads a path's `{entity_type}/{entity_id}`; every kind but the organization needs a UUID.
    pub fn parse(kind: ContextEntityType, id: &str) -> Result<Self, String> {
        let uuid = || Uuid::parse_str(id).map_err(|_| format!("'{id}' is not a valid {kind} id (a UUID)"));
        Ok(match kind {
            ContextEntityType::Organization => ContextEntity::Organization(id.to_string()),
            ContextEntityType::Project => ContextEntity::Project(uuid()?),
            ContextEntityType::Environment => ContextEntity::Environment(uuid()?),
            ContextEntityType::Team => ContextEntity::Team(uuid()?),
            ContextEntityType::Agent => ContextEntity::Agent(uuid()?),
        })
    }

    pub fn kind(&self) -> ContextEntityType {
        match self {
            ContextEntity::Organization(_) => ContextEntityType::Organization,
            ContextEntity::Project(_) => ContextEntityType::Project,
            ContextEntity::Environment(_) => ContextEntityType::Environment,
            ContextEntity::Team(_) => ContextEntityType::Team,
            ContextEntity::Agent(_) => ContextEntityType::Agent,
        }
    }

    /// The UUID of a project, environment, team or agent; `None` for the organization.
    pub fn uuid(&self) -> Option<Uuid> {
        match self {
            ContextEntity::Organization(_) => None,
            ContextEntity::Project(id)
            | ContextEntity::Environment(id)
            | ContextEntity::Team(id)
            | ContextEntity::Agent(id) => Some(*id),
        }
    }

    /// The id as it appears on the wire (the slug or the UUID).
    pub fn id(&self) -> String {
        match self {
            ContextEntity::Organization(slug) => slug.clone(),
            other => other.uuid().map(|u| u.to_string()).unwrap_or_default(),
        }
    }

    /// `<type>/<id>`, the id a `DELETE` of this context answers with.
    pub fn path(&self) -> String {
        format!("{}/{}", self.kind(), self.id())
    }
}

/// The context stored for one entity. An entity with nothing stored answers empty lists and a
/// null `id`, `created_at` and `updated_at` (reading never creates a row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Context {
    /// Null until something is stored for the entity.
    #[schema(required = true)]
    pub id: Option<Uuid>,
    pub entity_type: ContextEntityType,
    /// The organization's slug, or the UUID of the project, environment, team or agent.
    pub entity_id: String,
    pub organization_id: String,
    pub knowledge_uuids: Vec<String>,
    pub resource_ids: Vec<String>,
    pub policy_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Null until something is stored for the entity.
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(required = true)]
    pub created_at: Option<DateTime<Utc>>,
    /// Null until something is stored for the entity.
    #[serde(serialize_with = "crate::common::rfc3339::option::serialize")]
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
}

/// `PUT /context/{type}/{id}`: a partial update. Fields left out stay; a given list replaces the
/// stored one; `variables`, when given, replaces all variables.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateContext {
    #[schema(max_items = 1000)]
    pub knowledge_uuids: Option<Vec<String>>,
    #[schema(max_items = 1000)]
    pub resource_ids: Option<Vec<String>>,
    #[schema(max_items = 1000)]
    pub policy_ids: Option<Vec<String>>,
    /// An object of JSON values.
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

fn check_list(v: &mut Issues, field: &str, list: Option<&Vec<String>>) {
    let Some(list) = list else { return };
    if list.len() > MAX_CONTEXT_ENTRIES {
        v.push(field, format!("must have at most {MAX_CONTEXT_ENTRIES} entries"));
    }
    // The first bad entry is enough to point at; a thousand identical issues help nobody.
    let bad = list.iter().enumerate().find_map(|(i, s)| {
        if s.trim().is_empty() {
            Some((i, "must not be blank".to_string()))
        } else if s.chars().count() > MAX_CONTEXT_ENTRY_CHARS {
            Some((i, format!("must be at most {MAX_CONTEXT_ENTRY_CHARS} characters")))
        } else {
            None
        }
    });
    if let Some((i, issue)) = bad {
        v.push(&format!("{field}[{i}]"), issue);
    }
}

impl UpdateContext {
    pub fn validate(&self) -> Result<(), Vec<FieldIssue>> {
        let mut v = Issues::new();
        check_list(&mut v, "knowledge_uuids", self.knowledge_uuids.as_ref());
        check_list(&mut v, "resource_ids", self.resource_ids.as_ref());
        check_list(&mut v, "policy_ids", self.policy_ids.as_ref());
        v.object("variables", self.variables.as_ref());
        v.finish()
    }
}

/// One step of a resolved context: an entity of the chain with what is stored for it (empty
/// when nothing is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContextLayer {
    pub layer: ContextEntityType,
    pub entity_id: String,
    pub knowledge_uuids: Vec<String>,
    pub resource_ids: Vec<String>,
    pub policy_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
}

/// The context that applies to an entity: its chain (organization → projects → environments →
/// teams → the entity) merged. Lists keep the first occurrence of each entry in chain order;
/// a variable set by a later layer overrides an earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedContext {
    pub entity_type: ContextEntityType,
    pub entity_id: String,
    pub knowledge_uuids: Vec<String>,
    pub resource_ids: Vec<String>,
    pub policy_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
    /// Every entity of the chain, in resolution order.
    pub layers: Vec<ContextLayer>,
}

fn merge_list(into: &mut Vec<String>, seen: &mut HashSet<String>, from: &[String]) {
    for item in from {
        if seen.insert(item.clone()) {
            into.push(item.clone());
        }
    }
}

impl ResolvedContext {
    /// Merges `layers`, given in resolution order.
    pub fn merge(entity: &ContextEntity, layers: Vec<ContextLayer>) -> Self {
        let mut out = ResolvedContext {
            entity_type: entity.kind(),
            entity_id: entity.id(),
            knowledge_uuids: Vec::new(),
            resource_ids: Vec::new(),
            policy_ids: Vec::new(),
            variables: Map::new(),
            layers: Vec::new(),
        };
        let (mut knowledge, mut resources, mut policies) = (HashSet::new(), HashSet::new(), HashSet::new());
        for layer in &layers {
            merge_list(&mut out.knowledge_uuids, &mut knowledge, &layer.knowledge_uuids);
            merge_list(&mut out.resource_ids, &mut resources, &layer.resource_ids);
            merge_list(&mut out.policy_ids, &mut policies, &layer.policy_ids);
            for (k, v) in &layer.variables {
                out.variables.insert(k.clone(), v.clone());
            }
        }
        out.layers = layers;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(layer: ContextEntityType, ids: &[&str], vars: Value) -> ContextLayer {
        ContextLayer {
            layer,
            entity_id: "x".into(),
            knowledge_uuids: ids.iter().map(|s| s.to_string()).collect(),
            resource_ids: Vec::new(),
            policy_ids: ids.iter().rev().map(|s| s.to_string()).collect(),
            variables: vars.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn merge_keeps_first_seen_order_and_later_variables_win() {
        let agent = ContextEntity::Agent(Uuid::nil());
        let merged = ResolvedContext::merge(
            &agent,
            vec![
                layer(ContextEntityType::Organization, &["a", "b"], json!({"x": 1, "y": 1})),
                layer(ContextEntityType::Team, &["c", "a"], json!({"y": 2, "z": {"n": 1}})),
                layer(ContextEntityType::Agent, &["b", "d"], json!({"z": null})),
            ],
        );
        assert_eq!(merged.knowledge_uuids, ["a", "b", "c", "d"]);
        assert_eq!(merged.policy_ids, ["b", "a", "c", "d"]);
        assert_eq!(
            merged.variables,
            *json!({"x": 1, "y": 2, "z": null}).as_object().unwrap()
        );
        assert_eq!(merged.layers.len(), 3);
        assert_eq!(merged.entity_type, ContextEntityType::Agent);
        assert_eq!(merged.entity_id, Uuid::nil().to_string());
    }

    #[test]
    fn wire_names_match() {
        for kind in ContextEntityType::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
        }
    }

    #[test]
    fn entities_parse_by_kind() {
        let id = Uuid::now_v7();
        assert_eq!(
            ContextEntity::parse(ContextEntityType::Team, &id.to_string()),
            Ok(ContextEntity::Team(id))
        );
        assert!(ContextEntity::parse(ContextEntityType::Agent, "acme").is_err());
        let org = ContextEntity::parse(ContextEntityType::Organization, "acme").unwrap();
        assert_eq!(org.path(), "organization/acme");
        assert_eq!(org.uuid(), None);
    }

    #[test]
    fn updates_are_validated() {
        let ok = UpdateContext {
            knowledge_uuids: Some(vec!["k".into()]),
            variables: Some(json!({"a": [1]})),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let bad = UpdateContext {
            knowledge_uuids: Some(vec!["k".into(), " ".into(), "".into()]),
            resource_ids: Some(vec!["r".repeat(513)]),
            policy_ids: Some(vec!["p".into(); 1001]),
            variables: Some(json!([1])),
        };
        let fields: Vec<String> = bad.validate().unwrap_err().into_iter().map(|i| i.field).collect();
        assert_eq!(
            fields,
            ["knowledge_uuids[1]", "resource_ids[0]", "policy_ids", "variables"]
        );
    }
}
