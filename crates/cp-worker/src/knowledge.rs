//! The knowledge skill: `search_knowledge` and `query_graph`, answered by the control plane
//! for this execution (the worker's key reads knowledge only through a run it holds).

use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::ControlPlane;

/// Characters of a query's answer the model gets at most.
const MAX_ANSWER_CHARS: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Search,
    Graph,
}

impl Op {
    pub fn of_tool(tool: &str) -> Option<Op> {
        match tool {
            "search_knowledge" => Some(Op::Search),
            "query_graph" => Some(Op::Graph),
            _ => None,
        }
    }

    pub fn parameters(self) -> Value {
        match self {
            Op::Search => json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to look for, in words"}},
                "required": ["query"],
            }),
            Op::Graph => json!({
                "type": "object",
                "properties": {"cypher": {"type": "string", "description":
                    "A read-only Cypher query: MATCH (up to 3 hops) … WHERE … RETURN … ORDER BY … LIMIT"}},
                "required": ["cypher"],
            }),
        }
    }
}

/// Not `Debug`: it holds the worker's key.
#[derive(Clone)]
pub struct Knowledge {
    pub cp: ControlPlane,
    pub execution: Uuid,
    pub op: Op,
}

impl Knowledge {
    pub async fn run(&self, args: &Value) -> (String, bool) {
        let answer = match self.op {
            Op::Search => match args["query"].as_str() {
                Some(q) => self.cp.knowledge_search(self.execution, q).await.map(search_answer),
                None => return ("search_knowledge needs `query`".into(), true),
            },
            Op::Graph => match args["cypher"].as_str() {
                Some(q) => self
                    .cp
                    .graph_query(self.execution, q)
                    .await
                    .map(|v| clip(&v["results"].to_string())),
                None => return ("query_graph needs `cypher`".into(), true),
            },
        };
        match answer {
            Ok(text) => (text, false),
            Err(e) => (e.to_string(), true),
        }
    }
}

/// The matches as text: each title, where it came from, and the start of its content.
fn search_answer(found: Value) -> String {
    let items = found["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "No knowledge item matches.".into();
    }
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        out.push_str(&format!("{}. {}", i + 1, item["title"].as_str().unwrap_or_default()));
        if let Some(source) = item["source"].as_str() {
            out.push_str(&format!(" (source: {source})"));
        }
        out.push('\n');
        out.push_str(item["excerpt"].as_str().unwrap_or_default());
        out.push_str("\n\n");
    }
    clip(out.trim_end())
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ANSWER_CHARS) {
        Some((end, _)) => format!("{}\n[… answer cut at {MAX_ANSWER_CHARS} characters]", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_read_as_numbered_titles_with_their_text() {
        let found = json!({"items": [
            {"title": "Failover", "source": "wiki", "excerpt": "Promote the replica."},
            {"title": "Owners", "source": null, "excerpt": "payments-team"},
        ]});
        assert_eq!(
            search_answer(found),
            "1. Failover (source: wiki)\nPromote the replica.\n\n2. Owners\npayments-team"
        );
        assert_eq!(search_answer(json!({"items": []})), "No knowledge item matches.");
        assert!(clip(&"x".repeat(MAX_ANSWER_CHARS + 5)).ends_with("characters]"));
    }
}
