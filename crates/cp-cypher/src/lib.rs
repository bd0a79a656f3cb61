//! A read-only subset of Cypher, compiled into one SQL statement (SQLite or PostgreSQL) over
//! the context graph tables `graph_nodes`, `graph_node_labels` and `graph_relationships`
//! (cp-store migration `0025_context_graph.sql`).
//!
//! # The subset
//!
//! - `MATCH` with one or more comma-separated path patterns; several `MATCH` clauses (each with
//!   its own `WHERE`) form one conjunction. Nodes: `(v)`, `(v:Label)`, `(v:A:B)` (all labels
//!   required), `(:Label {key: literal, ...})`, `()`. Relationships: `-[r:TYPE]->`,
//!   `<-[:TYPE]-`, `-[:A|B]-` (either direction), `-->`, `<--`, `--`, with `{key: literal}`
//!   maps. Variable length: `*1..3`, `*2` (exactly two), `*..2` (one or two); it may not have a
//!   variable and it matches each reachable pair of nodes once (not once per path). A query has
//!   at most [`MAX_HOPS`] hops: a fixed relationship counts one, a variable one its maximum.
//!   A variable used twice is the same node. Within one `MATCH`, fixed relationships are
//!   distinct, as in Cypher.
//! - `WHERE`: `=`, `<>`, `<`, `>`, `<=`, `>=`, `CONTAINS`, `STARTS WITH`, `ENDS WITH` (all
//!   case-sensitive), `IN [list]`, `IS [NOT] NULL`, `AND`, `OR`, `NOT`, parentheses, over
//!   `v.key` (nodes or relationships), literals (strings with `\` escapes, integers, floats,
//!   `true`, `false`, `null`, lists), `v:Label`, `id(v) = 'uuid'`, `type(r) = 'TYPE'`, `a = b`
//!   (the same node or relationship), and a bare `v.key` (true when it is `true`).
//! - `RETURN [DISTINCT]`: `v`, `v.key`, `id(v)`, `labels(v)`, `type(r)`, `count(*)`,
//!   `count([DISTINCT] v)`, `count([DISTINCT] v.key)`, each with `AS alias`. Non-aggregated
//!   items next to a count group the rows.
//! - `ORDER BY item [ASC|DESC]` (an expression above or a returned alias; nulls sort last
//!   ascending, first descending), `SKIP n`, `LIMIT n` (1 to [`MAX_LIMIT`], default
//!   [`DEFAULT_LIMIT`]).
//! - Keywords are case-insensitive; names are `[A-Za-z_][A-Za-z0-9_]*` or backtick-quoted;
//!   `//` and `/* */` comments and a trailing `;` are allowed. Queries are at most
//!   [`MAX_QUERY_BYTES`] bytes with brackets nested at most [`MAX_NESTING`] deep.
//!
//! Anything else is a [`CypherError`] whose `clause` names what was refused: `CREATE`,
//! `MERGE`, `DELETE`, `DETACH DELETE`, `SET`, `REMOVE`, `CALL`, `LOAD CSV`, `UNWIND`, `WITH`,
//! `UNION`, `FOREACH`, `OPTIONAL MATCH`, `shortestPath`, `parameters`,
//! `variable-length relationship`, `MATCH` (too many hops), `LIMIT`, `RETURN`, `WHERE`, ...;
//! a query the grammar cannot read at all is `syntax` with a line and column.
//!
//! # The SQL
//!
//! `$1` is always the caller's organization id (text); it is not in [`Compiled::binds`], whose
//! first element is `$2`. Every table the statement reads is filtered by
//! `organization_id = $1`. No user text is ever part of the SQL: labels, types, property keys
//! and literals are all binds. Both dialects use `$n` placeholders (SQLite reads `$2` as a
//! named parameter called "$2"). For SQLite, bind [`Bind::Uuid`] as its 16 bytes (a BLOB);
//! for PostgreSQL every bind carries an explicit cast (`$3::text`, `$4::jsonb`, `$5::uuid`).

mod ast;
mod compile;
mod parse;

pub use compile::{DEFAULT_LIMIT, MAX_HOPS, MAX_INDEXED_NAME, MAX_LIMIT, MAX_PREDICATES, MAX_RETURN_ITEMS, MAX_TABLES};
pub use parse::{MAX_NESTING, MAX_QUERY_BYTES};

use std::fmt;

/// The SQL dialect to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Ids are 16-byte BLOBs, JSON columns TEXT (SQLite 3.38 or newer for `->`/`->>`).
    Sqlite,
    /// Ids are UUID, JSON columns JSONB.
    Postgres,
}

/// Why a query was refused: `clause` names the clause or feature (e.g. "CREATE", "LIMIT",
/// "syntax"), `message` says what is supported instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CypherError {
    pub clause: String,
    pub message: String,
}

impl CypherError {
    pub(crate) fn new(clause: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            clause: clause.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for CypherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.clause, self.message)
    }
}

impl std::error::Error for CypherError {}

/// A compiled query: run `sql` with `$1` = the organization id and `binds` as `$2`, `$3`, ...
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub binds: Vec<Bind>,
    /// The result columns in order; a node or relationship spans several SQL columns.
    pub columns: Vec<Column>,
    /// The `LIMIT` in the statement (the query's, or [`DEFAULT_LIMIT`]).
    pub limit: i64,
}

impl Compiled {
    /// How many SQL columns a row has (the sum of [`ColumnKind::width`]).
    pub fn sql_width(&self) -> usize {
        self.columns.iter().map(|c| c.kind.width()).sum()
    }
}

/// One bound parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    /// Not emitted today (SQLite compares booleans as 0/1, PostgreSQL as JSON); kept for callers
    /// that build binds generically.
    Bool(bool),
    /// PostgreSQL only: bind as `jsonb`.
    Json(serde_json::Value),
    /// SQLite: bind the 16 bytes as a BLOB; PostgreSQL: bind as `uuid`.
    Uuid(uuid::Uuid),
}

/// One result column: its name (the alias, else the item's source text such as `s.name` or
/// `count(*)`) and what the SQL columns hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
}

/// What one result column occupies in the SQL row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// 5 SQL columns: id (uuid), labels (JSON array), properties (JSON object),
    /// integration (text), external_id (text).
    Node,
    /// 5 SQL columns: id (uuid), type (text), from_id (uuid), to_id (uuid),
    /// properties (JSON object).
    Relationship,
    /// 1 SQL column: a JSON value, NULL when the property is missing. SQLite: JSON text;
    /// PostgreSQL: jsonb.
    Value,
    /// 1 SQL column: a 64-bit integer.
    Count,
    /// 1 SQL column: the uuid of `id(v)`.
    Id,
    /// 1 SQL column: the JSON array of `labels(v)`.
    Labels,
    /// 1 SQL column: the text of `type(r)`.
    Type,
}

impl ColumnKind {
    /// How many SQL columns this kind occupies.
    pub fn width(self) -> usize {
        match self {
            Self::Node | Self::Relationship => 5,
            _ => 1,
        }
    }
}

/// Parses `query` and compiles it for `dialect`.
pub fn compile(query: &str, dialect: Dialect) -> Result<Compiled, CypherError> {
    let ast = parse::parse(query)?;
    compile::compile(&ast, dialect)
}
