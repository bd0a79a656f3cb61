//! Who asks a service: the key, its organization and its role. `http` makes one from each
//! request's key; background tasks act for the organization whose work they do.

use cp_types::org::Role;
use uuid::Uuid;

/// The caller of a service: its key, organization and role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub key_name: String,
    pub role: Role,
    pub org_id: String,
    pub org_name: String,
    /// For a worker key made for one queue: that queue.
    pub worker_queue_id: Option<Uuid>,
}
