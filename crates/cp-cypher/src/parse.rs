//! Cypher text → [`Query`]: size and nesting caps, the pest grammar, and naming the clause of
//! an unsupported query (write clauses, procedures, parameters) when the grammar rejects it.

use pest::Parser;
use pest::error::{ErrorVariant, LineColLocation};
use pest::iterators::{Pair, Pairs};
use pest_derive::Parser;

use crate::CypherError;
use crate::ast::*;

/// Queries longer than this are rejected before parsing.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;
/// Deepest nesting of `(`, `[` and `{`: parsing and compiling recurse per level. An unoptimised
/// build handles about 128 levels in a 2 MiB thread stack, so 64 leaves room for the caller.
pub const MAX_NESTING: usize = 64;

pub(crate) const SUPPORTED: &str = "only read-only queries are supported: MATCH (several allowed) \
     with WHERE, then RETURN [DISTINCT], ORDER BY, SKIP and LIMIT";

#[derive(Parser)]
#[grammar = "grammar.pest"]
struct CypherParser;

type Result<T> = std::result::Result<T, CypherError>;

/// Parses one query of the supported subset.
pub fn parse(query: &str) -> Result<Query> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(CypherError::new(
            "query",
            format!(
                "the query is {} bytes; at most {MAX_QUERY_BYTES} are allowed",
                query.len()
            ),
        ));
    }
    let tokens = tokenize(query)?;
    let mut pairs = match CypherParser::parse(Rule::query, query) {
        Ok(pairs) => pairs,
        Err(err) => return Err(unsupported_clause(&tokens).unwrap_or_else(|| syntax(err))),
    };
    build_query(next(&mut pairs)?)
}

// ---------------------------------------------------------------------------------------------
// Pre-scan: a tiny lexer that skips strings, quoted names and comments.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Punct(char),
    /// A string, number or backtick-quoted name.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    tok: Tok<'a>,
    depth: usize,
}

/// Splits the query into coarse tokens with their bracket depth, rejecting parameters and
/// over-deep nesting before the recursive parser can see them.
fn tokenize(query: &str) -> Result<Vec<Token<'_>>> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut clause = "syntax";
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    // Backslash escapes in strings; backticks double instead.
                    i += if c != b'`' && bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                tokens.push(Token { tok: Tok::Other, depth });
            }
            b'$' => {
                return Err(CypherError::new(
                    "parameters",
                    format!("query parameters ($name) are not supported: write literal values; {SUPPORTED}"),
                ));
            }
            b'(' | b'[' | b'{' => {
                tokens.push(Token {
                    tok: Tok::Punct(c as char),
                    depth,
                });
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(CypherError::new(
                        clause,
                        format!("brackets nest deeper than {MAX_NESTING} levels"),
                    ));
                }
                i += 1;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                tokens.push(Token {
                    tok: Tok::Punct(c as char),
                    depth,
                });
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &query[start..i];
                if depth == 0 {
                    clause = match word.to_ascii_uppercase().as_str() {
                        "MATCH" => "MATCH",
                        "WHERE" => "WHERE",
                        "RETURN" => "RETURN",
                        "ORDER" => "ORDER BY",
                        _ => clause,
                    };
                }
                tokens.push(Token {
                    tok: Tok::Word(word),
                    depth,
                });
            }
            c if c.is_ascii_digit() => {
                while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                tokens.push(Token { tok: Tok::Other, depth });
            }
            _ => {
                // Multi-byte UTF-8 characters land here byte by byte; only ASCII matters.
                if c.is_ascii() {
                    tokens.push(Token {
                        tok: Tok::Punct(c as char),
                        depth,
                    });
                }
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// The first clause keyword outside the subset, found without the grammar (which failed), so
/// that `MATCH (n) DETACH DELETE n` says "DETACH DELETE" rather than "line 1, column 11".
fn unsupported_clause(tokens: &[Token<'_>]) -> Option<CypherError> {
    let word_at = |i: usize| match tokens.get(i).map(|t| t.tok) {
        Some(Tok::Word(w)) => Some(w.to_ascii_uppercase()),
        _ => None,
    };
    for (i, token) in tokens.iter().enumerate() {
        let Tok::Word(word) = token.tok else { continue };
        let upper = word.to_ascii_uppercase();
        let prev = i.checked_sub(1).and_then(|p| tokens.get(p)).map(|t| t.tok);
        let next = tokens.get(i + 1).map(|t| t.tok);
        // A property key (`n.set`), an alias (`AS set`) or a map key is not a clause.
        if prev == Some(Tok::Punct('.')) || next == Some(Tok::Punct(':')) {
            continue;
        }
        if i > 0 && word_at(i - 1).as_deref() == Some("AS") {
            continue;
        }
        if matches!(upper.as_str(), "SHORTESTPATH" | "ALLSHORTESTPATHS") && next == Some(Tok::Punct('(')) {
            return Some(CypherError::new(
                "shortestPath",
                format!(
                    "shortestPath() is not supported; use a bounded variable-length relationship such as -[:TYPE*1..3]->; {SUPPORTED}"
                ),
            ));
        }
        if token.depth != 0 {
            continue;
        }
        let clause = match upper.as_str() {
            "CREATE" | "MERGE" | "DELETE" | "SET" | "REMOVE" | "CALL" | "UNWIND" | "UNION" | "FOREACH" | "USE"
            | "CASE" => upper.clone(),
            "EXISTS" if next == Some(Tok::Punct('{')) => upper.clone(),
            "WITH" => {
                let after_string_op = i > 0 && matches!(word_at(i - 1).as_deref(), Some("STARTS") | Some("ENDS"));
                if after_string_op {
                    continue;
                }
                upper.clone()
            }
            "DETACH" if word_at(i + 1).as_deref() == Some("DELETE") => "DETACH DELETE".into(),
            "DETACH" => upper.clone(),
            "OPTIONAL" => "OPTIONAL MATCH".into(),
            "LOAD" => "LOAD CSV".into(),
            _ => continue,
        };
        return Some(CypherError::new(
            clause.clone(),
            format!("{clause} is not supported; {SUPPORTED}"),
        ));
    }
    None
}

fn syntax(err: pest::error::Error<Rule>) -> CypherError {
    let err = err.renamed_rules(rule_name);
    let (line, column) = match err.line_col {
        LineColLocation::Pos(pos) | LineColLocation::Span(pos, _) => pos,
    };
    let detail = match &err.variant {
        ErrorVariant::ParsingError { .. } => err.variant.message().into_owned(),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    CypherError::new("syntax", format!("line {line}, column {column}: {detail}"))
}

/// Names for pest's "expected ..." list that a reader of Cypher recognises.
fn rule_name(rule: &Rule) -> String {
    let name = match rule {
        Rule::EOI => "end of query",
        Rule::match_clause | Rule::MATCH => "MATCH",
        Rule::where_clause | Rule::WHERE => "WHERE",
        Rule::return_clause | Rule::RETURN => "RETURN",
        Rule::order_clause | Rule::ORDER => "ORDER BY",
        Rule::skip_clause | Rule::SKIP => "SKIP",
        Rule::limit_clause | Rule::LIMIT => "LIMIT",
        Rule::pattern | Rule::node_pattern => "a node pattern `(...)`",
        Rule::relationship => "a relationship `-[...]->`",
        Rule::expression | Rule::comparison | Rule::not_expr => "an expression",
        Rule::variable | Rule::name => "a name",
        Rule::literal => "a literal",
        Rule::integer => "an integer",
        Rule::cmp_op => "a comparison operator",
        Rule::reserved => "a reserved word",
        Rule::node_labels => "`:Label`",
        Rule::properties => "a property map `{key: value}`",
        Rule::rel_detail => "`[...]`",
        other => return format!("{other:?}"),
    };
    name.to_string()
}

// ---------------------------------------------------------------------------------------------
// Parse tree → AST.

/// The grammar guarantees each pair's shape; a surprise is a bug, reported rather than panicking.
fn next<'a>(pairs: &mut Pairs<'a, Rule>) -> Result<Pair<'a, Rule>> {
    pairs
        .next()
        .ok_or_else(|| CypherError::new("syntax", "unexpected end of the parse tree"))
}

fn unexpected(pair: &Pair<'_, Rule>) -> CypherError {
    CypherError::new(
        "syntax",
        format!("unexpected {:?} at `{}`", pair.as_rule(), pair.as_str()),
    )
}

fn build_query(pair: Pair<'_, Rule>) -> Result<Query> {
    let mut query = Query {
        matches: Vec::new(),
        ret: Return {
            distinct: false,
            star: false,
            items: Vec::new(),
        },
        order: Vec::new(),
        skip: None,
        limit: None,
    };
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::match_clause => query.matches.push(build_match(part)?),
            Rule::return_clause => query.ret = build_return(part)?,
            Rule::order_clause => {
                for item in part.into_inner().filter(|p| p.as_rule() == Rule::sort_item) {
                    query.order.push(build_sort_item(item)?);
                }
            }
            Rule::skip_clause => query.skip = Some(clause_integer(part, "SKIP")?),
            Rule::limit_clause => query.limit = Some(clause_integer(part, "LIMIT")?),
            _ => {}
        }
    }
    Ok(query)
}

fn clause_integer(pair: Pair<'_, Rule>, clause: &str) -> Result<i64> {
    let int = pair
        .into_inner()
        .find(|p| p.as_rule() == Rule::integer)
        .ok_or_else(|| CypherError::new(clause, "expected an integer"))?;
    int.as_str()
        .parse()
        .map_err(|_| CypherError::new(clause, format!("{} is out of range", int.as_str())))
}

fn build_match(pair: Pair<'_, Rule>) -> Result<MatchClause> {
    let mut clause = MatchClause {
        patterns: Vec::new(),
        predicate: None,
    };
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::pattern => clause.patterns.push(build_pattern(part)?),
            Rule::where_clause => {
                let expr = part
                    .into_inner()
                    .find(|p| p.as_rule() == Rule::expression)
                    .ok_or_else(|| CypherError::new("WHERE", "expected an expression"))?;
                clause.predicate = Some(build_expr(expr)?);
            }
            _ => {}
        }
    }
    Ok(clause)
}

fn build_pattern(pair: Pair<'_, Rule>) -> Result<Pattern> {
    let mut parts = pair.into_inner();
    let start = build_node(next(&mut parts)?)?;
    let mut hops = Vec::new();
    while let Some(rel) = parts.next() {
        let rel = build_rel(rel)?;
        let node = build_node(next(&mut parts)?)?;
        hops.push((rel, node));
    }
    Ok(Pattern { start, hops })
}

fn build_node(pair: Pair<'_, Rule>) -> Result<NodePattern> {
    let mut node = NodePattern::default();
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::variable => node.var = Some(ident(part)?),
            Rule::node_labels => node.labels = labels(part)?,
            Rule::properties => node.props = properties(part)?,
            _ => return Err(unexpected(&part)),
        }
    }
    Ok(node)
}

fn build_rel(pair: Pair<'_, Rule>) -> Result<RelPattern> {
    let mut rel = RelPattern {
        var: None,
        types: Vec::new(),
        direction: Direction::Both,
        length: None,
        props: Vec::new(),
    };
    let (mut left, mut right) = (false, false);
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::left_arrow => left = true,
            Rule::right_arrow => right = true,
            Rule::rel_detail => {
                for detail in part.into_inner() {
                    match detail.as_rule() {
                        Rule::variable => rel.var = Some(ident(detail)?),
                        Rule::rel_types => {
                            for name in detail.into_inner() {
                                rel.types.push(ident(name)?);
                            }
                        }
                        Rule::var_length => rel.length = Some(var_length(detail)?),
                        Rule::properties => rel.props = properties(detail)?,
                        _ => return Err(unexpected(&detail)),
                    }
                }
            }
            _ => return Err(unexpected(&part)),
        }
    }
    // `<-->` has both arrows; Cypher reads it as undirected.
    rel.direction = match (left, right) {
        (true, false) => Direction::In,
        (false, true) => Direction::Out,
        _ => Direction::Both,
    };
    Ok(rel)
}

fn var_length(pair: Pair<'_, Rule>) -> Result<VarLength> {
    let mut length = VarLength {
        min: None,
        max: None,
        range: false,
    };
    for part in pair.into_inner() {
        let bound = || {
            part.as_str().parse::<u64>().map_err(|_| {
                CypherError::new(
                    "variable-length relationship",
                    format!("{} is out of range", part.as_str()),
                )
            })
        };
        match part.as_rule() {
            Rule::range_start => length.min = Some(bound()?),
            Rule::range_end => length.max = Some(bound()?),
            Rule::range_dots => length.range = true,
            _ => return Err(unexpected(&part)),
        }
    }
    Ok(length)
}

fn labels(pair: Pair<'_, Rule>) -> Result<Vec<String>> {
    pair.into_inner().map(ident).collect()
}

fn properties(pair: Pair<'_, Rule>) -> Result<Vec<(String, Literal)>> {
    pair.into_inner()
        .map(|prop| {
            let mut parts = prop.into_inner();
            let key = ident(next(&mut parts)?)?;
            let value = literal(next(&mut parts)?)?;
            Ok((key, value))
        })
        .collect()
}

/// A `name` or `variable` pair: a plain identifier or a backtick-quoted one (`` `` `` is `).
fn ident(pair: Pair<'_, Rule>) -> Result<String> {
    let inner = pair.into_inner().next();
    match inner {
        Some(p) if p.as_rule() == Rule::plain_ident => Ok(p.as_str().to_string()),
        Some(p) if p.as_rule() == Rule::quoted_ident => {
            let text = p.as_str();
            let body = text.get(1..text.len().saturating_sub(1)).unwrap_or_default();
            Ok(body.replace("``", "`"))
        }
        Some(p) => Err(unexpected(&p)),
        None => Err(CypherError::new("syntax", "expected a name")),
    }
}

fn literal(pair: Pair<'_, Rule>) -> Result<Literal> {
    let pair = match pair.as_rule() {
        Rule::literal => next(&mut pair.into_inner())?,
        _ => pair,
    };
    Ok(match pair.as_rule() {
        Rule::null_lit => Literal::Null,
        Rule::true_lit => Literal::Bool(true),
        Rule::false_lit => Literal::Bool(false),
        Rule::integer => Literal::Int(
            pair.as_str()
                .parse()
                .map_err(|_| CypherError::new("syntax", format!("integer {} is out of range", pair.as_str())))?,
        ),
        Rule::float => {
            let value: f64 = pair
                .as_str()
                .parse()
                .map_err(|_| CypherError::new("syntax", format!("invalid number {}", pair.as_str())))?;
            if !value.is_finite() {
                return Err(CypherError::new(
                    "syntax",
                    format!("number {} is out of range", pair.as_str()),
                ));
            }
            Literal::Float(value)
        }
        Rule::string => Literal::Str(unescape(next(&mut pair.into_inner())?.as_str())?),
        _ => return Err(unexpected(&pair)),
    })
}

/// Cypher string escapes: `\\ \' \" \n \r \t \b \f \uXXXX \UXXXXXXXX`.
fn unescape(body: &str) -> Result<String> {
    let bad = |what: &str| CypherError::new("syntax", format!("invalid escape in string: {what}"));
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(u @ ('u' | 'U')) => {
                let len = if u == 'u' { 4 } else { 8 };
                let hex: String = chars.by_ref().take(len).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == len)
                    .and_then(char::from_u32)
                    .ok_or_else(|| bad(&format!("\\{u}{hex}")))?;
                out.push(code);
            }
            Some(other) => return Err(bad(&format!("\\{other}"))),
            None => return Err(bad("a lone backslash")),
        }
    }
    Ok(out)
}

fn build_return(pair: Pair<'_, Rule>) -> Result<Return> {
    let mut ret = Return {
        distinct: false,
        star: false,
        items: Vec::new(),
    };
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::distinct => ret.distinct = true,
            Rule::return_star => ret.star = true,
            Rule::return_item => {
                let mut expr = None;
                let mut alias = None;
                let mut text = String::new();
                for p in part.into_inner() {
                    match p.as_rule() {
                        Rule::expression => {
                            text = p.as_str().trim().to_string();
                            expr = Some(build_expr(p)?);
                        }
                        Rule::variable => alias = Some(ident(p)?),
                        _ => {}
                    }
                }
                let expr = expr.ok_or_else(|| CypherError::new("RETURN", "expected an item"))?;
                ret.items.push(ReturnItem { expr, alias, text });
            }
            _ => {}
        }
    }
    Ok(ret)
}

fn build_sort_item(pair: Pair<'_, Rule>) -> Result<SortItem> {
    let mut expr = None;
    let mut descending = false;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::expression => expr = Some(build_expr(p)?),
            Rule::desc => descending = true,
            _ => {}
        }
    }
    let expr = expr.ok_or_else(|| CypherError::new("ORDER BY", "expected an expression"))?;
    Ok(SortItem { expr, descending })
}

/// Builds an expression; recursion is bounded by the bracket depth cap in [`tokenize`].
fn build_expr(mut pair: Pair<'_, Rule>) -> Result<Expr> {
    // Walk down single-child wrappers (a lone operand of OR, AND, NOT, a comparison, or
    // parentheses) in a loop: one stack frame per real level, not six.
    while matches!(
        pair.as_rule(),
        Rule::expression | Rule::parenthesized | Rule::or_expr | Rule::and_expr | Rule::not_expr | Rule::comparison
    ) && pair.clone().into_inner().nth(1).is_none()
    {
        pair = next(&mut pair.into_inner())?;
    }
    match pair.as_rule() {
        Rule::or_expr | Rule::and_expr => build_logic(pair),
        Rule::not_expr => build_not(pair),
        Rule::comparison => {
            let mut parts = pair.into_inner();
            let left = build_expr(next(&mut parts)?)?;
            build_tail(left, next(&mut parts)?)
        }
        Rule::literal => Ok(Expr::Lit(literal(pair)?)),
        Rule::list => Ok(Expr::List(pair.into_inner().map(build_expr).collect::<Result<_>>()?)),
        Rule::variable => Ok(Expr::Var(ident(pair)?)),
        Rule::property => {
            let mut parts = pair.into_inner();
            let var = ident(next(&mut parts)?)?;
            let key = ident(next(&mut parts)?)?;
            Ok(Expr::Prop(var, key))
        }
        Rule::label_test => {
            let mut parts = pair.into_inner();
            let var = ident(next(&mut parts)?)?;
            let labels = labels(next(&mut parts)?)?;
            Ok(Expr::HasLabels(var, labels))
        }
        Rule::function_call => build_call(pair),
        _ => Err(unexpected(&pair)),
    }
}

fn build_logic(pair: Pair<'_, Rule>) -> Result<Expr> {
    let is_or = pair.as_rule() == Rule::or_expr;
    let items = pair
        .into_inner()
        .filter(|p| !matches!(p.as_rule(), Rule::OR | Rule::AND))
        .map(build_expr)
        .collect::<Result<Vec<_>>>()?;
    Ok(if is_or { Expr::Or(items) } else { Expr::And(items) })
}

fn build_not(pair: Pair<'_, Rule>) -> Result<Expr> {
    let mut nots = 0usize;
    let mut inner = None;
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::not_kw => nots += 1,
            _ => inner = Some(build_expr(p)?),
        }
    }
    let inner = inner.ok_or_else(|| CypherError::new("WHERE", "expected an expression"))?;
    // NOT NOT x is x: fold the chain instead of nesting it.
    Ok(if nots % 2 == 1 {
        Expr::Not(Box::new(inner))
    } else {
        inner
    })
}

fn build_call(pair: Pair<'_, Rule>) -> Result<Expr> {
    let mut name = String::new();
    let (mut distinct, mut star) = (false, false);
    let mut args = Vec::new();
    for p in pair.into_inner() {
        match p.as_rule() {
            Rule::variable => name = ident(p)?,
            Rule::distinct => distinct = true,
            Rule::call_star => star = true,
            _ => args.push(build_expr(p)?),
        }
    }
    Ok(Expr::Call {
        name,
        distinct,
        star,
        args,
    })
}

fn build_tail(left: Expr, tail: Pair<'_, Rule>) -> Result<Expr> {
    let rule = tail.as_rule();
    let mut parts = tail.into_inner();
    let left = Box::new(left);
    match rule {
        Rule::cmp_tail => {
            let op = match next(&mut parts)?.as_str() {
                "=" => CmpOp::Eq,
                "<>" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                ">" => CmpOp::Gt,
                "<=" => CmpOp::Le,
                _ => CmpOp::Ge,
            };
            Ok(Expr::Cmp(left, op, Box::new(build_expr(next(&mut parts)?)?)))
        }
        Rule::string_tail => {
            let op_pair = next(&mut next(&mut parts)?.into_inner())?;
            let op = match op_pair.as_rule() {
                Rule::contains => StrOp::Contains,
                Rule::starts_with => StrOp::StartsWith,
                _ => StrOp::EndsWith,
            };
            Ok(Expr::Str(left, op, Box::new(build_expr(next(&mut parts)?)?)))
        }
        Rule::in_tail => {
            let right = parts
                .find(|p| p.as_rule() != Rule::IN)
                .ok_or_else(|| CypherError::new("WHERE", "expected a list after IN"))?;
            Ok(Expr::In(left, Box::new(build_expr(right)?)))
        }
        Rule::null_tail => {
            let negated = parts.any(|p| p.as_rule() == Rule::not_kw);
            Ok(Expr::IsNull(left, negated))
        }
        _ => Err(CypherError::new("syntax", format!("unexpected {rule:?}"))),
    }
}
