//! Field validation that collects every issue before answering 422.

use crate::FieldIssue;

/// Accumulates field issues; `finish` turns them into a result.
#[derive(Debug, Default)]
pub struct Issues(Vec<FieldIssue>);

impl Issues {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, field: &str, issue: impl Into<String>) {
        self.0.push(FieldIssue::new(field, issue));
    }

    /// Records `issue` for `field` unless `ok` holds.
    pub fn check(&mut self, ok: bool, field: &str, issue: impl Into<String>) {
        if !ok {
            self.push(field, issue);
        }
    }

    /// Checks a string's length in characters, after trimming.
    pub fn length(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let n = value.trim().chars().count();
        if n < min || n > max {
            self.push(field, format!("must be between {min} and {max} characters"));
        }
    }

    /// Checks an optional string's length when present.
    pub fn max_length(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(v) = value
            && v.chars().count() > max
        {
            self.push(field, format!("must be at most {max} characters"));
        }
    }

    /// Checks that a JSON value is an object.
    pub fn object(&mut self, field: &str, value: Option<&serde_json::Value>) {
        if let Some(v) = value {
            self.check(v.is_object(), field, "must be an object");
        }
    }

    pub fn finish(self) -> Result<(), Vec<FieldIssue>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// Organization ids are slugs: `[a-z0-9-]{2,63}`, not starting or ending with `-`.
pub fn is_slug(s: &str) -> bool {
    (2..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
