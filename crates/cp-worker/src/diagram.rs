//! The data_visualization skill: `create_diagram {source}` takes Mermaid source, reads its
//! kind from its first line, checks it against the skill's enabled kinds and size, and
//! describes it for a `diagram` event (the dashboard renders it; the worker draws nothing).

use serde_json::{Value, json};

/// Mermaid's keyword of each kind the skill can enable, and the flag that does.
const KINDS: &[(&str, &str, &str)] = &[
    ("flowchart", "flowchart", "enable_flowchart"),
    ("graph", "flowchart", "enable_flowchart"),
    ("sequenceDiagram", "sequence", "enable_sequence_diagram"),
    ("classDiagram", "class", "enable_class_diagram"),
    ("classDiagram-v2", "class", "enable_class_diagram"),
    ("erDiagram", "er", "enable_er_diagram"),
    ("gantt", "gantt", "enable_gantt_chart"),
    ("pie", "pie", "enable_pie_chart"),
    ("stateDiagram", "state", "enable_state_diagram"),
    ("stateDiagram-v2", "state", "enable_state_diagram"),
    ("gitGraph", "git", "enable_git_graph"),
    ("journey", "journey", "enable_user_journey"),
    ("quadrantChart", "quadrant", "enable_quadrant_chart"),
];

#[derive(Debug, Clone)]
pub struct Diagrams {
    /// Keywords of the enabled kinds.
    enabled: Vec<&'static str>,
    max_size: usize,
}

impl Diagrams {
    pub fn from_config(config: &Value) -> Diagrams {
        Diagrams {
            enabled: KINDS
                .iter()
                .filter(|(_, _, flag)| config[*flag].as_bool().unwrap_or(true))
                .map(|(keyword, _, _)| *keyword)
                .collect(),
            max_size: config["max_diagram_size"].as_u64().unwrap_or(50_000) as usize,
        }
    }

    pub fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "source": {"type": "string", "description": format!(
                    "Mermaid source; its first line names the kind, one of: {}", self.enabled.join(", "))},
                "title": {"type": "string"},
            },
            "required": ["source"],
        })
    }

    /// The answer for the model and the `diagram` event's data, or why the diagram is refused.
    pub fn run(&self, args: &Value) -> Result<(String, Value), String> {
        let source = args["source"].as_str().ok_or("`source` is required")?;
        let size = source.chars().count();
        if size > self.max_size {
            return Err(format!(
                "the diagram has {size} characters; this skill takes at most {}",
                self.max_size
            ));
        }
        let keyword = first_keyword(source).ok_or("the source is empty: its first line must name the diagram kind")?;
        let Some((keyword, kind, _)) = KINDS.iter().find(|(k, _, _)| *k == keyword) else {
            return Err(format!(
                "'{keyword}' is not a Mermaid diagram kind this skill knows ({})",
                self.enabled.join(", ")
            ));
        };
        if !self.enabled.contains(keyword) {
            return Err(format!(
                "{kind} diagrams are not enabled for this skill (enabled: {})",
                self.enabled.join(", ")
            ));
        }
        let mut event = json!({"diagram_type": kind, "format": "mermaid", "source": source});
        if let Some(title) = args["title"].as_str() {
            event["title"] = json!(title);
        }
        Ok((format!("The {kind} diagram was shown to the user."), event))
    }
}

/// The first word of the first line that is not blank, a `%%` comment or front matter.
fn first_keyword(source: &str) -> Option<&str> {
    let mut lines = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("%%"));
    let mut line = lines.next()?;
    if line == "---" {
        // YAML front matter (a title, a config) up to its closing `---`.
        lines.by_ref().find(|l| *l == "---")?;
        line = lines.next()?;
    }
    let word = line.split_whitespace().next()?;
    Some(word.trim_end_matches(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_first_line() {
        let d = Diagrams::from_config(&json!({"enable_pie_chart": false, "max_diagram_size": 100}));
        let (answer, event) = d
            .run(&json!({"source": "%% a comment\n\nflowchart LR\n  A --> B", "title": "t"}))
            .unwrap();
        assert_eq!(answer, "The flowchart diagram was shown to the user.");
        assert_eq!(
            event,
            json!({"diagram_type": "flowchart", "format": "mermaid", "title": "t",
            "source": "%% a comment\n\nflowchart LR\n  A --> B"})
        );
        let (_, event) = d
            .run(&json!({"source": "---\ntitle: x\n---\nsequenceDiagram\nA->>B: hi"}))
            .unwrap();
        assert_eq!(event["diagram_type"], "sequence");
        assert_eq!(
            d.run(&json!({"source": "gitGraph:\n commit"})).unwrap().1["diagram_type"],
            "git"
        );
        let refused = |source: &str| d.run(&json!({ "source": source })).unwrap_err();
        assert!(refused("pie title Pets\n \"Dogs\" : 3").contains("pie diagrams are not enabled"));
        assert!(refused("mindmap\n root").contains("'mindmap' is not a Mermaid diagram kind"));
        assert!(refused("\n%% only\n").contains("is empty"));
        assert!(refused(&format!("graph TD\n{}", "A-->B\n".repeat(20))).contains("at most 100"));
        assert!(d.run(&json!({})).unwrap_err().contains("`source` is required"));
    }
}
