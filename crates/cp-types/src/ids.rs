//! Typed ids for the ids the execution engine passes around together, so that an execution's
//! id cannot stand where a worker's or a lease's is wanted.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id! {
    /// An execution.
    ExecutionId
}
uuid_id! {
    /// A registered worker.
    WorkerId
}
uuid_id! {
    /// A worker queue.
    QueueId
}
uuid_id! {
    /// One claim of an execution: what a worker's events and end of run must present.
    LeaseId
}

/// An organization: its slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub String);

impl OrgId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_and_write_as_their_uuid() {
        let id = ExecutionId::new_v7();
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text, format!("\"{}\"", id.uuid()));
        assert_eq!(serde_json::from_str::<ExecutionId>(&text).unwrap(), id);
        assert_eq!(id.to_string(), id.uuid().to_string());
    }
}
