//! What a run's resolved context brings into its instructions: the knowledge items it names,
//! most relevant to the prompt first within a token budget (the rest listed by title), and the
//! graph nodes it names, each summarized with its relationships.

use std::fmt::Write as _;

use cp_types::graph::{GraphNode, GraphRelationship};
use cp_types::knowledge::{KnowledgeItem, search_terms};
use serde_json::Value;
use uuid::Uuid;

use crate::services::error::ServiceResult;
use crate::state::AppState;

/// Tokens of knowledge text one run's instructions may carry.
pub const KNOWLEDGE_TOKEN_BUDGET: usize = 6000;
/// Tokens of resource summaries one run's instructions may carry.
pub const RESOURCE_TOKEN_BUDGET: usize = 2000;
/// A rough count, good enough to bound a prompt: English averages about four characters a token.
const CHARS_PER_TOKEN: usize = 4;
/// Relationships shown per resource.
const RELATIONSHIPS_PER_NODE: usize = 10;

/// `instructions` followed by the knowledge and resources the context names (unchanged when it
/// names none). Ids that no longer exist (deleted since the context was saved) are skipped.
pub async fn with_context(
    state: &AppState,
    org: &str,
    instructions: Option<String>,
    knowledge: &[Uuid],
    resources: &[Uuid],
    prompt: &str,
) -> ServiceResult<Option<String>> {
    if knowledge.is_empty() && resources.is_empty() {
        return Ok(instructions);
    }
    let mut out = instructions.unwrap_or_default();
    if !knowledge.is_empty() {
        // One character more than the budget tells an item too long to place whole.
        let budget = (KNOWLEDGE_TOKEN_BUDGET * CHARS_PER_TOKEN) as i64;
        let items = state.store.knowledge(org).get_many(knowledge, budget + 1).await?;
        if !items.is_empty() {
            push_section(&mut out, &knowledge_section(items, knowledge, prompt));
        }
    }
    if !resources.is_empty() {
        let graph = state.store.graph(org);
        let mut nodes = graph.nodes_by_id(resources).await?;
        nodes.sort_by_key(|n| resources.iter().position(|id| *id == n.id));
        if !nodes.is_empty() {
            let ids: Vec<Uuid> = nodes.iter().map(|n| n.id).collect();
            let max = (ids.len() * RELATIONSHIPS_PER_NODE) as i64;
            let (rels, others) = graph.neighbourhood(&ids, max).await?;
            push_section(&mut out, &resource_section(&nodes, &rels, &others));
        }
    }
    Ok(Some(out))
}

fn push_section(out: &mut String, section: &str) {
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(section);
}

/// How well an item answers the prompt: its title holding the prompt's words weighs most, then
/// how often its content does (with diminishing returns). Whole words only: "i" is not in "archive".
fn relevance(item: &KnowledgeItem, terms: &[String]) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let title = words(&item.title);
    let mut counts = vec![0usize; terms.len()];
    for word in words(&item.content) {
        if let Some(i) = terms.iter().position(|t| *t == word) {
            counts[i] += 1;
        }
    }
    terms
        .iter()
        .zip(counts)
        .map(|(t, n)| {
            let in_title = if title.contains(t) { 3.0 } else { 0.0 };
            in_title + (1.0 + n as f64).ln()
        })
        .sum()
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn knowledge_section(mut items: Vec<KnowledgeItem>, order: &[Uuid], prompt: &str) -> String {
    let terms = search_terms(prompt);
    let position = |id: &Uuid| order.iter().position(|o| o == id).unwrap_or(usize::MAX);
    let mut scored: Vec<(f64, usize, KnowledgeItem)> = items
        .drain(..)
        .map(|i| (relevance(&i, &terms), position(&i.id), i))
        .collect();
    // Most relevant first; the context's own order breaks ties.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut left = KNOWLEDGE_TOKEN_BUDGET * CHARS_PER_TOKEN;
    let mut out = String::from("## Knowledge\nThe organization's knowledge for this task, most relevant first.\n");
    let mut skipped = Vec::new();
    let mut included = 0;
    for (_, _, item) in scored {
        let mut head = format!("\n### {}\n", item.title);
        if let Some(source) = &item.source {
            let _ = writeln!(head, "Source: {source}");
        }
        let need = head.len() + item.content.len() + 1;
        if need <= left {
            out.push_str(&head);
            out.push_str(&item.content);
            out.push('\n');
            left -= need;
            included += 1;
        } else if included == 0 && left > head.len() + 200 {
            // The most relevant item, too long alone, still gives its beginning.
            let room = left - head.len() - 40;
            out.push_str(&head);
            out.push_str(clip(&item.content, room));
            out.push_str("\n[… cut to fit]\n");
            left = 0;
            included += 1;
        } else {
            skipped.push(item);
        }
    }
    if !skipped.is_empty() {
        out.push_str("\nAlso in this task's context, left out for length:\n");
        for item in skipped {
            let _ = writeln!(out, "- {} ({})", item.title, item.id);
        }
    }
    out
}

fn label_of(node: &GraphNode) -> String {
    let name = node
        .properties
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&node.external_id);
    format!("{} \"{}\"", node.labels.join(":"), name)
}

fn resource_section(nodes: &[GraphNode], rels: &[GraphRelationship], others: &[GraphNode]) -> String {
    let find = |id: Uuid| nodes.iter().chain(others).find(|n| n.id == id);
    let mut left = RESOURCE_TOKEN_BUDGET * CHARS_PER_TOKEN;
    let mut out =
        String::from("## Resources\nThe context graph's nodes this task concerns, with their relationships.\n");
    for node in nodes {
        let mut line = format!("- {} [{}:{}]", label_of(node), node.integration, node.external_id);
        let props: Vec<String> = node
            .properties
            .iter()
            .filter(|(k, _)| k.as_str() != "name")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !props.is_empty() {
            let _ = write!(line, " {}", clip(&props.join(", "), 400));
        }
        let links: Vec<String> = rels
            .iter()
            .filter_map(|r| {
                let (arrow, other) = if r.from == node.id {
                    (format!("-[{}]->", r.rel_type), r.to)
                } else if r.to == node.id {
                    (format!("<-[{}]-", r.rel_type), r.from)
                } else {
                    return None;
                };
                find(other).map(|o| format!("{arrow} {}", label_of(o)))
            })
            .take(RELATIONSHIPS_PER_NODE)
            .collect();
        if !links.is_empty() {
            let _ = write!(line, "; {}", links.join("; "));
        }
        line.push('\n');
        if line.len() > left {
            out.push_str("- … (more resources left out for length)\n");
            break;
        }
        left -= line.len();
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(title: &str, content: &str) -> KnowledgeItem {
        KnowledgeItem {
            id: Uuid::now_v7(),
            organization_id: "o".into(),
            title: title.into(),
            content: content.into(),
            tags: Vec::new(),
            source: None,
            project_id: None,
            created_by: None,
            created_at: cp_types::now(),
            updated_at: cp_types::now(),
        }
    }

    #[test]
    fn the_most_relevant_come_first_and_the_rest_by_title() {
        let lunch = item("Lunch", "Soup.");
        let runbook = item("Payments failover", "Restart the payments workers after failover.");
        let huge = item("Archive", &"x".repeat(KNOWLEDGE_TOKEN_BUDGET * CHARS_PER_TOKEN));
        let order = [lunch.id, huge.id, runbook.id];
        let text = knowledge_section(vec![lunch, huge.clone(), runbook], &order, "payments failover?");
        let (pay, soup) = (text.find("Payments failover").unwrap(), text.find("Soup.").unwrap());
        assert!(pay < soup, "{text}");
        assert!(text.contains(&format!("- Archive ({})", huge.id)), "{text}");
        assert!(text.len() <= KNOWLEDGE_TOKEN_BUDGET * CHARS_PER_TOKEN + 200);
    }

    #[test]
    fn an_item_too_big_alone_is_cut_on_a_character_boundary() {
        let big = item("Big", &"é".repeat(KNOWLEDGE_TOKEN_BUDGET * CHARS_PER_TOKEN));
        let text = knowledge_section(vec![big.clone()], &[big.id], "anything");
        assert!(text.contains("[… cut to fit]"));
        assert!(text.len() <= KNOWLEDGE_TOKEN_BUDGET * CHARS_PER_TOKEN + 200);
    }
}
