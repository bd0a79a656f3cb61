//! [`Query`] → one SQL statement. Table aliases are generated (`n0`, `r0`, `l0`, `v0`), never
//! taken from the query, and every user value is a bind.

use std::collections::{HashMap, HashSet};

use crate::ast::*;
use crate::parse::SUPPORTED;
use crate::{Bind, Column, ColumnKind, Compiled, CypherError, Dialect};

/// The `LIMIT` when the query has none.
pub const DEFAULT_LIMIT: i64 = 1000;
/// The largest `LIMIT` a query may ask for.
pub const MAX_LIMIT: i64 = 1000;
/// The most relationship hops one query may walk (a variable-length one counts its maximum).
pub const MAX_HOPS: u64 = 3;
/// Tables one statement may join (SQLite refuses more than 64).
pub const MAX_TABLES: usize = 32;
/// Items of one RETURN.
pub const MAX_RETURN_ITEMS: usize = 32;
/// Predicates (comparisons, label tests, AND/OR/NOT) of all WHERE clauses together.
pub const MAX_PREDICATES: usize = 256;
/// The longest `name` the indexed column holds (longer ones are in `properties` only).
pub const MAX_INDEXED_NAME: usize = 512;

const ORG: &str = "$1";
const VAR_LENGTH: &str = "variable-length relationship";

type Result<T> = std::result::Result<T, CypherError>;

pub fn compile(query: &Query, dialect: Dialect) -> Result<Compiled> {
    let mut c = Compiler::new(dialect);
    check_hops(query)?;
    for clause in &query.matches {
        c.match_clause(clause)?;
    }
    if c.from.len() > MAX_TABLES {
        return Err(CypherError::new(
            "MATCH",
            format!(
                "the patterns need {} tables (one per node, relationship and label); at most {MAX_TABLES}",
                c.from.len()
            ),
        ));
    }
    if query.ret.items.len() > MAX_RETURN_ITEMS {
        return Err(CypherError::new("RETURN", format!("at most {MAX_RETURN_ITEMS} items")));
    }
    for predicate in query.matches.iter().filter_map(|m| m.predicate.as_ref()) {
        let sql = c.predicate(predicate, "WHERE")?;
        c.conds.push(sql);
    }
    c.finish(query)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Node,
    Rel,
}

#[derive(Debug, Clone)]
struct Var {
    kind: Kind,
    alias: String,
}

/// A comparison operand once its variables are resolved to table aliases.
#[derive(Debug, Clone)]
enum Operand {
    /// `v.key` on the table alias; `node` says whether the indexed `name` column exists.
    Prop {
        alias: String,
        node: bool,
        key: String,
    },
    Lit(Literal),
    /// `id(v)`.
    Id(String),
    /// `type(r)`.
    Type(String),
    /// A bare node or relationship variable: compared by id.
    Entity(String),
}

/// One compiled RETURN (or ORDER BY) item.
struct Item {
    select: Vec<String>,
    kind: ColumnKind,
    /// What GROUP BY lists when the item sits next to an aggregate.
    group: String,
    /// What ORDER BY sorts on, when the item can be sorted.
    sort: Option<String>,
    aggregate: bool,
}

struct Compiler {
    dialect: Dialect,
    binds: Vec<Bind>,
    /// Identical binds share one placeholder, so PostgreSQL sees identical expressions in
    /// SELECT DISTINCT/GROUP BY and ORDER BY.
    memo: HashMap<String, usize>,
    vars: HashMap<String, Var>,
    labelled: HashSet<(String, String)>,
    from: Vec<String>,
    conds: Vec<String>,
    ctes: Vec<String>,
    counter: usize,
    predicates: usize,
}

impl Compiler {
    fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            binds: Vec::new(),
            memo: HashMap::new(),
            vars: HashMap::new(),
            labelled: HashSet::new(),
            from: Vec::new(),
            conds: Vec::new(),
            ctes: Vec::new(),
            counter: 0,
            predicates: 0,
        }
    }

    fn pg(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    fn alias(&mut self, prefix: &str) -> String {
        let alias = format!("{prefix}{}", self.counter);
        self.counter += 1;
        alias
    }

    /// A placeholder for `bind`: `$n` in SQLite, `$n::type` in PostgreSQL (which cannot always
    /// infer a parameter's type).
    fn param(&mut self, bind: Bind) -> String {
        let cast = match (&bind, self.dialect) {
            (_, Dialect::Sqlite) => "",
            (Bind::Text(_), _) => "::text",
            (Bind::Int(_), _) => "::bigint",
            (Bind::Float(_), _) => "::double precision",
            (Bind::Bool(_), _) => "::boolean",
            (Bind::Json(_), _) => "::jsonb",
            (Bind::Uuid(_), _) => "::uuid",
        };
        let key = format!("{bind:?}");
        let index = match self.memo.get(&key) {
            Some(&index) => index,
            None => {
                self.binds.push(bind);
                let index = self.binds.len() + 1;
                self.memo.insert(key, index);
                index
            }
        };
        format!("${index}{cast}")
    }

    fn text(&mut self, text: &str) -> String {
        self.param(Bind::Text(text.to_string()))
    }

    /// A property key as a bind: a JSON path `$."key"` for SQLite, the bare key for PostgreSQL.
    fn key(&mut self, key: &str, clause: &str) -> Result<String> {
        if key.is_empty() || key.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(CypherError::new(
                clause,
                format!(
                    "property key {key:?} is not supported: keys may not be empty or contain quotes, backslashes or control characters"
                ),
            ));
        }
        Ok(match self.dialect {
            Dialect::Sqlite => self.text(&format!("$.\"{key}\"")),
            Dialect::Postgres => self.text(key),
        })
    }

    /// `alias.properties -> key`: the JSON value (jsonb in PostgreSQL, JSON text in SQLite).
    fn json_prop(&mut self, alias: &str, key: &str, clause: &str) -> Result<String> {
        let key = self.key(key, clause)?;
        Ok(format!("({alias}.properties -> {key})"))
    }

    /// `alias.properties ->> key`: the SQL value (SQLite) or text (PostgreSQL).
    fn text_prop(&mut self, alias: &str, key: &str, clause: &str) -> Result<String> {
        let key = self.key(key, clause)?;
        Ok(format!("({alias}.properties ->> {key})"))
    }

    /// A property as compared with `=`, `<`, `IN`: SQL values in SQLite, jsonb in PostgreSQL
    /// (which orders numbers numerically).
    fn cmp_prop(&mut self, alias: &str, key: &str, clause: &str) -> Result<String> {
        if self.pg() {
            self.json_prop(alias, key, clause)
        } else {
            self.text_prop(alias, key, clause)
        }
    }

    /// A literal as compared with a property's value (see [`Self::cmp_prop`]).
    fn cmp_literal(&mut self, lit: &Literal, clause: &str) -> Result<String> {
        Ok(match (lit, self.dialect) {
            (Literal::Null, _) => "NULL".into(),
            (Literal::List(_), _) => {
                return Err(CypherError::new(clause, "lists are only supported after IN"));
            }
            (Literal::Bool(b), Dialect::Sqlite) => self.param(Bind::Int(i64::from(*b))),
            (Literal::Int(i), Dialect::Sqlite) => self.param(Bind::Int(*i)),
            (Literal::Float(f), Dialect::Sqlite) => self.param(Bind::Float(*f)),
            (Literal::Str(s), Dialect::Sqlite) => self.text(s),
            (lit, Dialect::Postgres) => self.param(Bind::Json(to_json(lit))),
        })
    }

    // -----------------------------------------------------------------------------------------
    // MATCH

    fn match_clause(&mut self, clause: &MatchClause) -> Result<()> {
        // Fixed relationships of this MATCH with their types, for relationship uniqueness.
        let mut rels: Vec<(String, Vec<String>)> = Vec::new();
        for pattern in &clause.patterns {
            let mut left = self.node(&pattern.start)?;
            let mut left_pattern = &pattern.start;
            for (rel, node) in &pattern.hops {
                let right = self.node(node)?;
                match rel.length {
                    Some(length) => {
                        let (min, max) = bounds(rel, length)?;
                        self.walk(rel, min, max, (&left, left_pattern), (&right, node))?;
                    }
                    None => {
                        let alias = self.relationship(rel, &left, &right)?;
                        for (other, types) in &rels {
                            let overlap =
                                types.is_empty() || rel.types.is_empty() || types.iter().any(|t| rel.types.contains(t));
                            if overlap {
                                self.conds.push(format!("{other}.id <> {alias}.id"));
                            }
                        }
                        rels.push((alias, rel.types.clone()));
                    }
                }
                left = right;
                left_pattern = node;
            }
        }
        Ok(())
    }

    /// Declares (or finds) a node pattern's table and adds its label and property filters.
    fn node(&mut self, node: &NodePattern) -> Result<String> {
        let alias = match &node.var {
            Some(name) => match self.vars.get(name) {
                Some(Var {
                    kind: Kind::Node,
                    alias,
                }) => alias.clone(),
                Some(_) => {
                    return Err(CypherError::new(
                        "MATCH",
                        format!("`{name}` is a relationship and cannot be used as a node"),
                    ));
                }
                None => {
                    let alias = self.new_node();
                    self.vars.insert(
                        name.clone(),
                        Var {
                            kind: Kind::Node,
                            alias: alias.clone(),
                        },
                    );
                    alias
                }
            },
            None => self.new_node(),
        };
        // A node named in its pattern is found by the name index; its labels are then only
        // checked, never the place to start from.
        let named = node
            .props
            .iter()
            .any(|(k, v)| k == "name" && matches!(v, Literal::Str(s) if s.len() <= MAX_INDEXED_NAME));
        for label in &node.labels {
            // A join, not EXISTS: the planner can then start from the (org, label) index.
            if self.labelled.insert((alias.clone(), label.clone())) {
                let l = self.alias("l");
                let p = self.text(label);
                self.from.push(format!("graph_node_labels {l}"));
                let (org, column) = match named {
                    true => (
                        self.unindexed(&format!("{l}.organization_id")),
                        self.unindexed(&format!("{l}.label")),
                    ),
                    false => (format!("{l}.organization_id"), format!("{l}.label")),
                };
                self.conds
                    .push(format!("{org} = {ORG} AND {l}.node_id = {alias}.id AND {column} = {p}"));
            }
        }
        for (key, value) in &node.props {
            let cond = self.prop_equals(&alias, true, key, value)?;
            self.conds.push(cond);
        }
        Ok(alias)
    }

    fn new_node(&mut self) -> String {
        let alias = self.alias("n");
        self.from.push(format!("graph_nodes {alias}"));
        self.conds.push(format!("{alias}.organization_id = {ORG}"));
        alias
    }

    /// `{key: value}` in a pattern: the same as `WHERE v.key = value`.
    fn prop_equals(&mut self, alias: &str, node: bool, key: &str, value: &Literal) -> Result<String> {
        let prop = Operand::Prop {
            alias: alias.to_string(),
            node,
            key: key.to_string(),
        };
        self.compare(prop, CmpOp::Eq, Operand::Lit(value.clone()), "MATCH")
    }

    /// A fixed-length relationship: a join on the endpoints in the pattern's direction.
    fn relationship(&mut self, rel: &RelPattern, left: &str, right: &str) -> Result<String> {
        let alias = self.alias("r");
        if let Some(name) = &rel.var {
            if let Some(var) = self.vars.get(name) {
                let what = if var.kind == Kind::Node {
                    "a node"
                } else {
                    "another relationship"
                };
                return Err(CypherError::new(
                    "MATCH",
                    format!("`{name}` is already {what}; a relationship variable may appear once"),
                ));
            }
            self.vars.insert(
                name.clone(),
                Var {
                    kind: Kind::Rel,
                    alias: alias.clone(),
                },
            );
        }
        self.from.push(format!("graph_relationships {alias}"));
        // On SQLite a relationship is reached from its ends (the from/to indexes), never by
        // scanning the organization's relationships (see `unindexed`).
        let org = self.unindexed(&format!("{alias}.organization_id"));
        self.conds.push(format!("{org} = {ORG}"));
        if let Some(types) = self.type_filter(&alias, &rel.types) {
            self.conds.push(types);
        }
        let (out, into) = (
            format!("{alias}.from_id = {left}.id AND {alias}.to_id = {right}.id"),
            format!("{alias}.from_id = {right}.id AND {alias}.to_id = {left}.id"),
        );
        self.conds.push(match rel.direction {
            Direction::Out => out,
            Direction::In => into,
            Direction::Both => format!("(({out}) OR ({into}))"),
        });
        for (key, value) in &rel.props {
            let cond = self.prop_equals(&alias, false, key, value)?;
            self.conds.push(cond);
        }
        Ok(alias)
    }

    /// `column` as SQLite's planner may not use through an index (a unary `+`). Without
    /// statistics it rates every two-column equality alike, so it would drive a query from the
    /// organization's relationships of a type, or from every node of a label, rather than from
    /// the node named: a 2-hop query from a named node over 300,000 relationships took 150 ms.
    fn unindexed(&self, column: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_string(),
        }
    }

    fn type_filter(&mut self, alias: &str, types: &[String]) -> Option<String> {
        let column = self.unindexed(&format!("{alias}.type"));
        match types {
            [] => None,
            [one] => Some(format!("{column} = {}", self.text(one))),
            many => {
                let params: Vec<String> = many.iter().map(|t| self.text(t)).collect();
                Some(format!("{column} IN ({})", params.join(", ")))
            }
        }
    }

    /// A variable-length relationship: a recursive CTE walking at most `max` hops from an
    /// anchor node (the side with label or property filters, which seed the walk), joined to
    /// both endpoints as distinct (start, end) pairs.
    fn walk(
        &mut self,
        rel: &RelPattern,
        min: u64,
        max: u64,
        left: (&str, &NodePattern),
        right: (&str, &NodePattern),
    ) -> Result<()> {
        let constrained = |n: &NodePattern| !n.labels.is_empty() || !n.props.is_empty();
        let (anchor, other, direction) = if !constrained(left.1) && constrained(right.1) {
            (right, left, rel.direction.reversed())
        } else {
            (left, right, rel.direction)
        };
        let cte = self.alias("w");
        let mut seed = vec![format!("s.organization_id = {ORG}")];
        for label in &anchor.1.labels {
            seed.push(self.has_label("s", label));
        }
        for (key, value) in &anchor.1.props {
            seed.push(self.prop_equals("s", true, key, value)?);
        }
        let mut step = vec![format!("e.organization_id = {ORG}"), format!("w.depth < {max}")];
        if let Some(types) = self.type_filter("e", &rel.types) {
            step.push(types);
        }
        for (key, value) in &rel.props {
            step.push(self.prop_equals("e", false, key, value)?);
        }
        let (join, next) = match direction {
            Direction::Out => ("e.from_id = w.dst".to_string(), "e.to_id".to_string()),
            Direction::In => ("e.to_id = w.dst".to_string(), "e.from_id".to_string()),
            Direction::Both => (
                "(e.from_id = w.dst OR e.to_id = w.dst)".to_string(),
                "CASE WHEN e.from_id = w.dst THEN e.to_id ELSE e.from_id END".to_string(),
            ),
        };
        self.ctes.push(format!(
            "{cte}(src, dst, depth) AS (SELECT s.id, s.id, 0 FROM graph_nodes s WHERE {} \
             UNION SELECT w.src, {next}, w.depth + 1 FROM {cte} w \
             JOIN graph_relationships e ON {join} WHERE {})",
            seed.join(" AND "),
            step.join(" AND "),
        ));
        let v = self.alias("v");
        self.from.push(format!(
            "(SELECT DISTINCT src, dst FROM {cte} WHERE depth >= {min}) {v}"
        ));
        self.conds
            .push(format!("{v}.src = {}.id AND {v}.dst = {}.id", anchor.0, other.0));
        Ok(())
    }

    fn has_label(&mut self, alias: &str, label: &str) -> String {
        let p = self.text(label);
        format!(
            "EXISTS (SELECT 1 FROM graph_node_labels lx WHERE lx.organization_id = {ORG} \
             AND lx.node_id = {alias}.id AND lx.label = {p})"
        )
    }

    // -----------------------------------------------------------------------------------------
    // WHERE

    fn var(&self, name: &str, clause: &str) -> Result<&Var> {
        self.vars
            .get(name)
            .ok_or_else(|| CypherError::new(clause, format!("variable `{name}` is not defined by a MATCH pattern")))
    }

    fn operand(&self, expr: &Expr, clause: &str) -> Result<Operand> {
        Ok(match expr {
            Expr::Lit(lit) => Operand::Lit(lit.clone()),
            Expr::List(items) => {
                let items = items
                    .iter()
                    .map(|item| match item {
                        Expr::Lit(lit) if !matches!(lit, Literal::List(_)) => Ok(lit.clone()),
                        _ => Err(CypherError::new(clause, "list items must be literals")),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Operand::Lit(Literal::List(items))
            }
            Expr::Prop(name, key) => {
                let var = self.var(name, clause)?;
                Operand::Prop {
                    alias: var.alias.clone(),
                    node: var.kind == Kind::Node,
                    key: key.clone(),
                }
            }
            Expr::Var(name) => Operand::Entity(self.var(name, clause)?.alias.clone()),
            Expr::Call {
                name,
                distinct: false,
                star: false,
                args,
            } => {
                let function = name.to_ascii_lowercase();
                let var = match args.as_slice() {
                    [Expr::Var(v)] => self.var(v, clause)?,
                    _ => return Err(unsupported_function(name, clause)),
                };
                match (function.as_str(), var.kind) {
                    ("id", _) => Operand::Id(var.alias.clone()),
                    ("type", Kind::Rel) => Operand::Type(var.alias.clone()),
                    _ => return Err(unsupported_function(name, clause)),
                }
            }
            Expr::Call { name, .. } => return Err(unsupported_function(name, clause)),
            _ => {
                return Err(CypherError::new(
                    clause,
                    "expected a property (v.key), a literal, id(v) or type(r) here",
                ));
            }
        })
    }

    /// A boolean SQL expression for a WHERE predicate.
    fn predicate(&mut self, expr: &Expr, clause: &str) -> Result<String> {
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return Err(CypherError::new(clause, format!("at most {MAX_PREDICATES} conditions")));
        }
        Ok(match expr {
            Expr::And(items) | Expr::Or(items) => {
                let glue = if matches!(expr, Expr::And(_)) { " AND " } else { " OR " };
                let parts = items
                    .iter()
                    .map(|item| self.predicate(item, clause))
                    .collect::<Result<Vec<_>>>()?;
                format!("({})", parts.join(glue))
            }
            Expr::Not(inner) => format!("(NOT {})", self.predicate(inner, clause)?),
            Expr::Cmp(left, op, right) => {
                let (left, right) = (self.operand(left, clause)?, self.operand(right, clause)?);
                self.compare(left, *op, right, clause)?
            }
            Expr::Str(left, op, right) => {
                let (left, right) = (self.operand(left, clause)?, self.operand(right, clause)?);
                self.string_op(left, *op, right, clause)?
            }
            Expr::In(left, right) => {
                let (left, right) = (self.operand(left, clause)?, self.operand(right, clause)?);
                self.in_list(left, right, clause)?
            }
            Expr::IsNull(inner, negated) => {
                let is_null = match self.operand(inner, clause)? {
                    Operand::Prop { alias, key, .. } => {
                        // `->>` is NULL for a missing key and for JSON null alike.
                        let value = self.text_prop(&alias, &key, clause)?;
                        return Ok(format!("{value} IS {}NULL", if *negated { "NOT " } else { "" }));
                    }
                    Operand::Lit(Literal::Null) => true,
                    _ => false,
                };
                if is_null != *negated { "TRUE" } else { "FALSE" }.to_string()
            }
            Expr::HasLabels(name, labels) => {
                let var = self.var(name, clause)?.clone();
                let parts: Vec<String> = labels
                    .iter()
                    .map(|label| match var.kind {
                        Kind::Node => self.has_label(&var.alias, label),
                        // `r:TYPE` on a relationship tests its type.
                        Kind::Rel => format!("{}.type = {}", var.alias, self.text(label)),
                    })
                    .collect();
                format!("({})", parts.join(" AND "))
            }
            Expr::Lit(Literal::Bool(b)) => if *b { "TRUE" } else { "FALSE" }.to_string(),
            Expr::Lit(Literal::Null) => "NULL".to_string(),
            Expr::Prop(..) => {
                // A bare property is a boolean test: true only when it is `true`.
                let prop = self.operand(expr, clause)?;
                self.compare(prop, CmpOp::Eq, Operand::Lit(Literal::Bool(true)), clause)?
            }
            _ => {
                return Err(CypherError::new(
                    clause,
                    format!("expected a condition (comparison, IN, IS NULL, v:Label, AND/OR/NOT); {SUPPORTED}"),
                ));
            }
        })
    }

    fn compare(&mut self, left: Operand, op: CmpOp, right: Operand, clause: &str) -> Result<String> {
        let sql_op = match op {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Gt => ">",
            CmpOp::Le => "<=",
            CmpOp::Ge => ">=",
        };
        let equality = matches!(op, CmpOp::Eq | CmpOp::Ne);
        let mismatch = || {
            CypherError::new(
                clause,
                "id() compares with a uuid string or another id(), type() with a string, and a \
                 node or relationship with another one, by = or <> only",
            )
        };
        Ok(match (left, right) {
            // Comparing with null is null in Cypher: never true, NOT included.
            (Operand::Lit(Literal::Null), _) | (_, Operand::Lit(Literal::Null)) => "NULL".into(),
            // The indexed `name` column holds properties.name when it is a string.
            (Operand::Prop { alias, node: true, key }, Operand::Lit(Literal::Str(s)))
            | (Operand::Lit(Literal::Str(s)), Operand::Prop { alias, node: true, key })
                if key == "name" && op == CmpOp::Eq && s.len() <= MAX_INDEXED_NAME =>
            {
                format!("{alias}.name = {}", self.text(&s))
            }
            (Operand::Entity(a), Operand::Entity(b)) | (Operand::Id(a), Operand::Id(b)) if equality => {
                format!("{a}.id {sql_op} {b}.id")
            }
            (Operand::Id(a), Operand::Lit(Literal::Str(s))) | (Operand::Lit(Literal::Str(s)), Operand::Id(a))
                if equality =>
            {
                format!("{a}.id {sql_op} {}", self.uuid(&s, clause)?)
            }
            (Operand::Type(a), Operand::Type(b)) => format!("{a}.type {sql_op} {b}.type"),
            (Operand::Type(a), Operand::Lit(Literal::Str(s))) => {
                format!("{a}.type {sql_op} {}", self.text(&s))
            }
            (Operand::Lit(Literal::Str(s)), Operand::Type(a)) => {
                format!("{} {sql_op} {a}.type", self.text(&s))
            }
            (left @ (Operand::Prop { .. } | Operand::Lit(_)), right @ (Operand::Prop { .. } | Operand::Lit(_))) => {
                let left = self.value(&left, clause)?;
                let right = self.value(&right, clause)?;
                format!("{left} {sql_op} {right}")
            }
            _ => return Err(mismatch()),
        })
    }

    /// A property or literal in comparable form (see [`Self::cmp_prop`]).
    fn value(&mut self, operand: &Operand, clause: &str) -> Result<String> {
        match operand {
            Operand::Prop { alias, key, .. } => self.cmp_prop(alias, key, clause),
            Operand::Lit(lit) => self.cmp_literal(lit, clause),
            _ => Err(CypherError::new(clause, "expected a property or a literal")),
        }
    }

    /// A string operand for CONTAINS / STARTS WITH / ENDS WITH: text in both dialects.
    fn string_value(&mut self, operand: &Operand, clause: &str) -> Result<String> {
        match operand {
            Operand::Prop { alias, key, .. } => self.text_prop(alias, key, clause),
            Operand::Lit(Literal::Str(s)) => Ok(self.text(s)),
            Operand::Type(alias) => Ok(format!("{alias}.type")),
            _ => Err(CypherError::new(
                clause,
                "CONTAINS, STARTS WITH and ENDS WITH compare a property or type() with a string",
            )),
        }
    }

    fn string_op(&mut self, left: Operand, op: StrOp, right: Operand, clause: &str) -> Result<String> {
        if matches!(left, Operand::Lit(Literal::Null)) || matches!(right, Operand::Lit(Literal::Null)) {
            return Ok("NULL".into());
        }
        let a = self.string_value(&left, clause)?;
        let b = self.string_value(&right, clause)?;
        // Case-sensitive and wildcard-free, unlike LIKE.
        Ok(match (op, self.dialect) {
            (StrOp::Contains, Dialect::Sqlite) => format!("instr({a}, {b}) > 0"),
            (StrOp::Contains, Dialect::Postgres) => format!("strpos({a}, {b}) > 0"),
            (StrOp::StartsWith, Dialect::Sqlite) => format!("substr({a}, 1, length({b})) = {b}"),
            (StrOp::StartsWith, Dialect::Postgres) => format!("starts_with({a}, {b})"),
            (StrOp::EndsWith, Dialect::Sqlite) => {
                format!("substr({a}, length({a}) - length({b}) + 1) = {b}")
            }
            (StrOp::EndsWith, Dialect::Postgres) => format!("right({a}, length({b})) = {b}"),
        })
    }

    fn in_list(&mut self, left: Operand, right: Operand, clause: &str) -> Result<String> {
        let Operand::Lit(Literal::List(items)) = right else {
            return Err(CypherError::new(clause, "IN needs a list of literals: x IN [1, 2]"));
        };
        if items.is_empty() {
            return Ok("FALSE".into());
        }
        let all_strings = items
            .iter()
            .all(|i| matches!(i, Literal::Str(s) if s.len() <= MAX_INDEXED_NAME));
        let (target, params) = match &left {
            Operand::Prop { alias, node: true, key } if key == "name" && all_strings => {
                let params = items.iter().map(|i| self.string_item(i)).collect();
                (format!("{alias}.name"), params)
            }
            Operand::Prop { .. } => {
                let target = self.value(&left, clause)?;
                let params = items
                    .iter()
                    .map(|i| self.cmp_literal(i, clause))
                    .collect::<Result<Vec<_>>>()?;
                (target, params)
            }
            Operand::Id(alias) | Operand::Entity(alias) if all_strings => {
                let params = items
                    .iter()
                    .map(|i| match i {
                        Literal::Str(s) => self.uuid(s, clause),
                        _ => Ok("NULL".into()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                (format!("{alias}.id"), params)
            }
            Operand::Type(alias) if all_strings => {
                let params = items.iter().map(|i| self.string_item(i)).collect();
                (format!("{alias}.type"), params)
            }
            _ => {
                return Err(CypherError::new(
                    clause,
                    "IN tests a property against literals, or id()/type() against strings",
                ));
            }
        };
        Ok(format!("{target} IN ({})", params.join(", ")))
    }

    fn string_item(&mut self, item: &Literal) -> String {
        match item {
            Literal::Str(s) => self.text(s),
            _ => "NULL".into(),
        }
    }

    fn uuid(&mut self, text: &str, clause: &str) -> Result<String> {
        let id =
            uuid::Uuid::parse_str(text).map_err(|_| CypherError::new(clause, format!("{text:?} is not a uuid")))?;
        Ok(self.param(Bind::Uuid(id)))
    }

    // -----------------------------------------------------------------------------------------
    // RETURN, ORDER BY, SKIP, LIMIT

    fn item(&mut self, expr: &Expr, clause: &str) -> Result<Item> {
        let plain = |select: String, kind, sort: Option<String>| Item {
            group: select.clone(),
            select: vec![select],
            kind,
            sort,
            aggregate: false,
        };
        Ok(match expr {
            Expr::Var(name) => {
                let var = self.var(name, clause)?;
                let a = &var.alias;
                let (columns, kind): (&[&str], _) = match var.kind {
                    Kind::Node => (
                        &["id", "labels", "properties", "integration", "external_id"],
                        ColumnKind::Node,
                    ),
                    Kind::Rel => (
                        &["id", "type", "from_id", "to_id", "properties"],
                        ColumnKind::Relationship,
                    ),
                };
                Item {
                    select: columns.iter().map(|c| format!("{a}.{c}")).collect(),
                    kind,
                    group: format!("{a}.id"),
                    sort: None,
                    aggregate: false,
                }
            }
            Expr::Prop(name, key) => {
                let alias = self.var(name, clause)?.alias.clone();
                let select = self.json_prop(&alias, key, clause)?;
                // SQLite sorts by the SQL value so numbers sort numerically; jsonb already does.
                let sort = if self.pg() {
                    select.clone()
                } else {
                    self.text_prop(&alias, key, clause)?
                };
                plain(select, ColumnKind::Value, Some(sort))
            }
            Expr::Call {
                name,
                distinct,
                star,
                args,
            } if name.eq_ignore_ascii_case("count") => {
                let d = if *distinct { "DISTINCT " } else { "" };
                let select = match (args.as_slice(), star) {
                    ([], true) if !distinct => "COUNT(*)".to_string(),
                    ([Expr::Var(v)], false) => format!("COUNT({d}{}.id)", self.var(v, clause)?.alias),
                    ([Expr::Prop(v, key)], false) => {
                        let alias = self.var(v, clause)?.alias.clone();
                        if self.pg() {
                            // JSON null is no value, as a missing key is.
                            let value = self.json_prop(&alias, key, clause)?;
                            format!("COUNT({d}NULLIF({value}, 'null'::jsonb))")
                        } else {
                            format!("COUNT({d}{})", self.text_prop(&alias, key, clause)?)
                        }
                    }
                    _ => {
                        return Err(CypherError::new(
                            clause,
                            "count() takes *, a variable or v.key (optionally DISTINCT)",
                        ));
                    }
                };
                Item {
                    group: String::new(),
                    select: vec![select.clone()],
                    kind: ColumnKind::Count,
                    sort: Some(select),
                    aggregate: true,
                }
            }
            Expr::Call {
                name,
                distinct: false,
                star: false,
                args,
            } => {
                let var = match args.as_slice() {
                    [Expr::Var(v)] => self.var(v, clause)?,
                    _ => return Err(unsupported_function(name, clause)),
                };
                let a = &var.alias;
                match (name.to_ascii_lowercase().as_str(), var.kind) {
                    ("id", _) => {
                        let s = format!("{a}.id");
                        plain(s.clone(), ColumnKind::Id, Some(s))
                    }
                    ("labels", Kind::Node) => {
                        let s = format!("{a}.labels");
                        plain(s.clone(), ColumnKind::Labels, Some(s))
                    }
                    ("type", Kind::Rel) => {
                        let s = format!("{a}.type");
                        plain(s.clone(), ColumnKind::Type, Some(s))
                    }
                    _ => return Err(unsupported_function(name, clause)),
                }
            }
            Expr::Call { name, .. } => return Err(unsupported_function(name, clause)),
            _ => {
                return Err(CypherError::new(
                    clause,
                    "items are v, v.key, id(v), labels(v), type(r) or count(...), each with AS alias",
                ));
            }
        })
    }

    fn finish(mut self, query: &Query) -> Result<Compiled> {
        let ret = &query.ret;
        if ret.star {
            return Err(CypherError::new(
                "RETURN",
                "RETURN * is not supported: name the items to return",
            ));
        }
        let mut items = Vec::new();
        let mut columns: Vec<Column> = Vec::new();
        for item in &ret.items {
            let name = item.alias.clone().unwrap_or_else(|| item.text.clone());
            if columns.iter().any(|c| c.name == name) {
                return Err(CypherError::new(
                    "RETURN",
                    format!("two columns are named `{name}`; give one an alias with AS"),
                ));
            }
            let compiled = self.item(&item.expr, "RETURN")?;
            columns.push(Column {
                name,
                kind: compiled.kind,
            });
            items.push(compiled);
        }
        let aggregated = items.iter().any(|i| i.aggregate);
        let group_by: Vec<String> = if aggregated {
            items.iter().filter(|i| !i.aggregate).map(|i| i.group.clone()).collect()
        } else {
            Vec::new()
        };

        let mut order = Vec::new();
        for sort in &query.order {
            let position = ret.items.iter().position(|item| match &sort.expr {
                Expr::Var(name) => item.alias.as_deref() == Some(name.as_str()) || item.expr == sort.expr,
                expr => item.expr == *expr,
            });
            let key = match position {
                Some(i) => items[i].sort.clone(),
                None if ret.distinct || aggregated => {
                    return Err(CypherError::new(
                        "ORDER BY",
                        "with DISTINCT or count(), ORDER BY may only use returned items or their aliases",
                    ));
                }
                None => {
                    let item = self.item(&sort.expr, "ORDER BY")?;
                    if item.aggregate {
                        return Err(CypherError::new("ORDER BY", "return count(...) to order by it"));
                    }
                    item.sort
                }
            };
            let key = key.ok_or_else(|| {
                CypherError::new(
                    "ORDER BY",
                    "order by a property, id(), type() or a count, not a whole node or relationship",
                )
            })?;
            // Cypher sorts nulls last ascending and first descending.
            order.push(if sort.descending {
                format!("{key} DESC NULLS FIRST")
            } else {
                format!("{key} ASC NULLS LAST")
            });
        }

        let limit = match query.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(n) => {
                return Err(CypherError::new(
                    "LIMIT",
                    format!("LIMIT {n} is out of range: use 1 to {MAX_LIMIT}"),
                ));
            }
        };
        if let Some(skip) = query.skip
            && skip < 0
        {
            return Err(CypherError::new("SKIP", "SKIP must not be negative"));
        }

        let mut sql = String::new();
        if !self.ctes.is_empty() {
            sql.push_str("WITH RECURSIVE ");
            sql.push_str(&self.ctes.join(", "));
            sql.push(' ');
        }
        sql.push_str("SELECT ");
        if ret.distinct {
            sql.push_str("DISTINCT ");
        }
        let select: Vec<String> = items.iter().flat_map(|i| i.select.iter().cloned()).collect();
        sql.push_str(&select.join(", "));
        sql.push_str(" FROM ");
        sql.push_str(&self.from.join(", "));
        sql.push_str(" WHERE ");
        sql.push_str(&self.conds.join(" AND "));
        if !group_by.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&group_by.join(", "));
        }
        if !order.is_empty() {
            sql.push_str(" ORDER BY ");
            sql.push_str(&order.join(", "));
        }
        // Integers formatted here, not user text.
        sql.push_str(&format!(" LIMIT {limit}"));
        if let Some(skip) = query.skip.filter(|s| *s > 0) {
            sql.push_str(&format!(" OFFSET {skip}"));
        }
        Ok(Compiled {
            sql,
            binds: self.binds,
            columns,
            limit,
        })
    }
}

/// Total hops of the query: fixed relationships count one, variable ones their maximum.
fn check_hops(query: &Query) -> Result<()> {
    let mut hops = 0u64;
    for pattern in query.matches.iter().flat_map(|m| &m.patterns) {
        for (rel, _) in &pattern.hops {
            hops = hops.saturating_add(match rel.length {
                Some(length) => bounds(rel, length)?.1,
                None => 1,
            });
        }
    }
    if hops > MAX_HOPS {
        return Err(CypherError::new(
            "MATCH",
            format!(
                "the query walks {hops} relationship hops; at most {MAX_HOPS} are allowed (a variable-length relationship counts its maximum)"
            ),
        ));
    }
    Ok(())
}

/// The (min, max) hops of a variable-length relationship; unbounded ones are refused.
fn bounds(rel: &RelPattern, length: VarLength) -> Result<(u64, u64)> {
    let err = |message: String| Err(CypherError::new(VAR_LENGTH, message));
    if rel.var.is_some() {
        return err("a variable-length relationship cannot have a variable: write -[:TYPE*1..3]->".into());
    }
    let (min, max) = match (length.min, length.max, length.range) {
        (Some(n), None, false) => (n, n),
        (min, Some(max), true) => (min.unwrap_or(1), max),
        _ => {
            return err(format!(
                "unbounded lengths (*, *.., *n..) are not supported: give a maximum, e.g. *1..{MAX_HOPS}"
            ));
        }
    };
    if min == 0 {
        return err("the minimum length must be at least 1".into());
    }
    if min > max {
        return err(format!("the minimum length {min} exceeds the maximum {max}"));
    }
    Ok((min, max))
}

fn unsupported_function(name: &str, clause: &str) -> CypherError {
    CypherError::new(
        clause,
        format!(
            "{name}() is not supported here: the functions are id(v), labels(v), type(r) and \
             count(*|v|v.key) (count in RETURN only)"
        ),
    )
}

fn to_json(lit: &Literal) -> serde_json::Value {
    match lit {
        Literal::Null => serde_json::Value::Null,
        Literal::Bool(b) => (*b).into(),
        Literal::Int(i) => (*i).into(),
        // Non-finite floats are refused by the parser.
        Literal::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
        Literal::Str(s) => s.clone().into(),
        Literal::List(items) => items.iter().map(to_json).collect(),
    }
}
