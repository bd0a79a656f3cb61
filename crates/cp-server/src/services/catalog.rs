//! Catalog rules shared by agents and teams: which model they run on and whether their
//! runtime accepts it.

use cp_store::{Store, StoreError};
use cp_types::model::Model;
use cp_types::runtime::{Runtime, runtime_issues};

use crate::services::error::{ServiceError, ServiceResult};

/// The model a request names (by id or value), or the organization's default when it names
/// none. Unknown or disabled models are a 422 on `field`.
pub async fn resolve_model(store: &Store, org: &str, requested: Option<&str>, field: &str) -> ServiceResult<Model> {
    let models = store.models(org);
    match requested {
        Some(name) => match models.find(name).await {
            Ok(m) if !m.enabled => Err(ServiceError::invalid(field, format!("model '{}' is disabled", m.value))),
            Ok(m) => Ok(m),
            Err(StoreError::NotFound) => Err(ServiceError::invalid(
                field,
                format!("no model '{name}' in this organization (see GET /api/v1/models)"),
            )),
            Err(e) => Err(e.into()),
        },
        None => match models.default_model().await {
            Ok(m) => Ok(m),
            Err(StoreError::NotFound) => Err(ServiceError::invalid(
                field,
                "no model given and the organization has no default model",
            )),
            Err(e) => Err(e.into()),
        },
    }
}

/// The runtime rules (API §3 Runtime row) as a 422 on `runtime`.
pub fn check_runtime(runtime: Runtime, model: &Model) -> ServiceResult<()> {
    let issues = runtime_issues(runtime, Some(model.facts()));
    match issues.into_iter().next() {
        None => Ok(()),
        Some(issue) => Err(ServiceError::invalid("runtime", issue)),
    }
}

/// Overrides must name a skill the agent or team gets, or they would be silently dropped.
pub fn check_skill_configurations(
    skill_ids: &[uuid::Uuid],
    configs: &std::collections::BTreeMap<uuid::Uuid, serde_json::Value>,
) -> ServiceResult<()> {
    match configs.keys().find(|id| !skill_ids.contains(id)) {
        Some(id) => Err(ServiceError::invalid(
            &format!("skill_configurations.{id}"),
            "names a skill that is not attached",
        )),
        None => Ok(()),
    }
}
