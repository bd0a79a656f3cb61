//! Store errors: the few cases callers act on, plus the database error itself.

/// What can go wrong in a repository call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No row of this organization has that id (a foreign id looks exactly the same).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule or a state rule refused the change.
    #[error("{0}")]
    Conflict(String),
    /// The database refused a value the API let through (e.g. a character PostgreSQL cannot store).
    #[error("{0}")]
    Invalid(String),
    /// A field names something that is not in the organization (an unknown environment id).
    #[error("{field}: {issue}")]
    Reference { field: String, issue: String },
    /// A stored value no longer parses (a bug or a hand-edited row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A statement went past a bound its caller set (a graph query's time or answer size).
    #[error("{0}")]
    LimitExceeded(String),
    /// The database did not answer in time or the pool is exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An error of the SQLite writer's own connection (see `sqlite_writer`).
    #[error(transparent)]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            // Busy or locked past the busy timeout: the client may retry.
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            e => StoreError::Sqlite(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            // The connection or the server went away (EOF mid-message shows up as Io, Protocol or,
            // during the TLS probe of a new connection, Tls): the client may retry.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(ref db) => {
                let code = db.code().unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes: the
                    // busy timeout ran out under write contention; the client may retry.
                    let primary = code.parse::<i32>().unwrap_or(0) & 0xff;
                    if primary == 5 || primary == 6 {
                        return StoreError::Unavailable(db.message().to_string());
                    }
                } else if code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03") {
                    // Connection exceptions and server shutdown / not yet accepting connections.
                    return StoreError::Unavailable(db.message().to_string());
                } else if code == "22021" || code == "22P05" {
                    // Invalid byte sequence / untranslatable character (NUL) in text or jsonb.
                    return StoreError::Invalid(db.message().to_string());
                }
                StoreError::Database(e)
            }
            e => StoreError::Database(e),
        }
    }
}

impl StoreError {
    /// Turns a unique-constraint violation into a [`StoreError::Conflict`] naming the field.
    ///
    /// `fields` are the candidate column names; the first one that appears in the violated
    /// constraint (PostgreSQL: its name; SQLite: its message) is reported.
    pub(crate) fn unique(e: sqlx::Error, what: &str, fields: &[&str]) -> StoreError {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            let hint = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
            let field = fields
                .iter()
                .find(|f| hint.contains(&format!("_{f}_")) || hint.contains(&format!(".{f}")))
                .copied();
            return match field {
                Some(f) => StoreError::Conflict(format!("a {what} with this {f} already exists")),
                None => StoreError::Conflict(format!("this {what} already exists")),
            };
        }
        e.into()
    }
}

impl StoreError {
    pub(crate) fn reference(field: impl Into<String>, issue: impl Into<String>) -> StoreError {
        StoreError::Reference {
            field: field.into(),
            issue: issue.into(),
        }
    }
}

/// Parses a stored enum value; a failure means the row is corrupt.
pub(crate) fn parse<T: std::str::FromStr<Err = String>>(s: &str) -> StoreResult<T> {
    s.parse().map_err(StoreError::Corrupt)
}
