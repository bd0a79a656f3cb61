//! Small shared pieces: timestamps, the delete answer, the "present but null" patch helper.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// All timestamps are UTC; stored with microsecond precision so both backends round-trip them exactly.
pub type Timestamp = DateTime<Utc>;

/// The current time truncated to microseconds (PostgreSQL's `timestamptz` precision).
pub fn now() -> Timestamp {
    Utc::now().trunc_subsecs(6)
}

/// `DELETE` answers this so clients that parse every response as JSON keep working.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

impl Deleted {
    pub fn new(id: impl ToString) -> Self {
        Self {
            id: id.to_string(),
            deleted: true,
        }
    }
}

/// Deserializes a field that distinguishes "absent" (`None`) from "explicitly null" (`Some(None)`).
///
/// Use with `#[serde(default, deserialize_with = "nullable")]` on `Option<Option<T>>` fields of
/// partial updates, so `{"description": null}` clears a value while leaving it out keeps it.
pub fn nullable<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Declares a wire enum: lowercase snake_case in JSON and in storage, with `as_str`,
/// `FromStr` (unknown values are an error naming the allowed ones) and `ALL`.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        // `rename_all` rather than a per-variant `rename`: utoipa cannot read a rename whose value
        // comes from a macro argument, and would document the Rust names. The `wire_names_match`
        // test checks that `as_str` and serde agree.
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The allowed values, for error messages.
            pub fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown value '{other}', expected one of: {}", Self::expected())),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::environment::EnvironmentStatus;
    use crate::org::{PolicyEnforcement, RateLimitTier, Role};
    use crate::project::{MemberKind, ProjectStatus, Visibility};

    fn check<T: serde::Serialize + std::fmt::Display + Copy>(all: &[T]) {
        for v in all {
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::Value::String(v.to_string())
            );
        }
    }

    #[test]
    fn wire_names_match() {
        check(Role::ALL);
        check(RateLimitTier::ALL);
        check(PolicyEnforcement::ALL);
        check(ProjectStatus::ALL);
        check(Visibility::ALL);
        check(MemberKind::ALL);
        check(EnvironmentStatus::ALL);
    }

    #[test]
    fn the_openapi_schema_uses_wire_names() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Role::schema()).unwrap();
        assert_eq!(
            schema["enum"],
            serde_json::json!(["admin", "member", "viewer", "worker"])
        );
    }
}
