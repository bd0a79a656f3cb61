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

/// Timestamps on the wire: RFC 3339 in UTC with exactly six fractional digits
/// (`2026-11-28T10:00:00.123456Z`), written without the formatting machinery, which was a
/// visible share of serializing a 100-row page.
pub mod rfc3339 {
    use chrono::{DateTime, Datelike, Timelike, Utc};
    use serde::Serializer;

    /// Writes `t`; years outside 0..=9999 fall back to chrono's own formatting.
    pub fn format<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; 27]) -> Option<&'a str> {
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        fn put(buf: &mut [u8], at: usize, value: u32, digits: usize) {
            let mut v = value;
            for i in (0..digits).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        buf.copy_from_slice(b"0000-00-00T00:00:00.000000Z");
        put(buf, 0, year as u32, 4);
        put(buf, 5, t.month(), 2);
        put(buf, 8, t.day(), 2);
        put(buf, 11, t.hour(), 2);
        put(buf, 14, t.minute(), 2);
        // A leap second is carried in the nanoseconds (>= 1e9); keep it inside the second.
        put(buf, 17, t.second(), 2);
        put(buf, 20, (t.nanosecond() % 1_000_000_000) / 1000, 6);
        std::str::from_utf8(buf).ok()
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 27];
        match format(t, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        }
    }

    /// The same for optional timestamps (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::Serializer;

        pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }
    }
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
    fn timestamps_have_six_fraction_digits_and_round_trip() {
        use chrono::{DateTime, TimeZone, Utc};
        let cases = [
            Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1999, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(123_456),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap() + chrono::Duration::nanoseconds(999_999_999),
        ];
        let expected = [
            "2026-11-28T10:00:00.000000Z",
            "1999-01-02T03:04:05.123456Z",
            "2026-12-31T23:59:59.999999Z",
        ];
        for (t, want) in cases.iter().zip(expected) {
            let mut buf = [0u8; 27];
            assert_eq!(super::rfc3339::format(t, &mut buf), Some(want));
            let back: DateTime<Utc> = want.parse().unwrap();
            assert_eq!(back.timestamp_micros(), t.timestamp_micros());
        }
        let far = Utc.with_ymd_and_hms(12026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(super::rfc3339::format(&far, &mut [0u8; 27]), None);
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
        check(crate::execution::ExecutionStatus::ALL);
        check(crate::execution::ExecutionType::ALL);
        check(crate::execution::FailureKind::ALL);
        check(crate::worker_queue::QueueStatus::ALL);
        check(crate::worker::WorkerStatus::ALL);
        check(crate::worker::RunnerHealth::ALL);
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
