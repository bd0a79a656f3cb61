//! The parsed query: only what the supported subset can express.

/// A whole query: its MATCH clauses' patterns (one conjunction), their WHERE predicates, the
/// projection and the paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub matches: Vec<MatchClause>,
    pub ret: Return,
    pub order: Vec<SortItem>,
    pub skip: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchClause {
    pub patterns: Vec<Pattern>,
    pub predicate: Option<Expr>,
}

/// `(a)-[r]->(b)<-[s]-(c)`: a start node and each hop with the node it reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub start: NodePattern,
    pub hops: Vec<(RelPattern, NodePattern)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodePattern {
    pub var: Option<String>,
    pub labels: Vec<String>,
    pub props: Vec<(String, Literal)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `-->`: from the left node to the right one.
    Out,
    /// `<--`: from the right node to the left one.
    In,
    /// `--`: either way.
    Both,
}

impl Direction {
    pub fn reversed(self) -> Self {
        match self {
            Self::Out => Self::In,
            Self::In => Self::Out,
            Self::Both => Self::Both,
        }
    }
}

/// The `*min..max` part of a relationship, as written (bounds checked by the compiler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarLength {
    pub min: Option<u64>,
    pub max: Option<u64>,
    /// `..` present: `*2` is exactly two hops, `*..2` one or two.
    pub range: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelPattern {
    pub var: Option<String>,
    pub types: Vec<String>,
    pub direction: Direction,
    pub length: Option<VarLength>,
    pub props: Vec<(String, Literal)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Literal>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Literal),
    /// A list whose items are expressions (only lists of literals compile).
    List(Vec<Expr>),
    Var(String),
    Prop(String, String),
    /// `name(args)`, `name(DISTINCT args)` or `name(*)`.
    Call {
        name: String,
        distinct: bool,
        star: bool,
        args: Vec<Expr>,
    },
    /// `v:A:B`.
    HasLabels(String, Vec<String>),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    Str(Box<Expr>, StrOp, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Return {
    pub distinct: bool,
    /// `RETURN *` (rejected by the compiler, kept so the error names RETURN).
    pub star: bool,
    pub items: Vec<ReturnItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReturnItem {
    pub expr: Expr,
    pub alias: Option<String>,
    /// The item's source text, the column name when there is no alias.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortItem {
    pub expr: Expr,
    pub descending: bool,
}
