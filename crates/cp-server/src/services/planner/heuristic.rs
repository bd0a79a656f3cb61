//! The plan made without a model: the task split into its parts, each given to the agent or
//! team whose name, description, capabilities and skills match it best (BM25). The same
//! task and catalog always give the same plan.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cp_types::plan::{Complexity, PlanStep, RecommendedExecution, TaskPlan};

use super::catalog::{Candidate, Catalog, Kind};

const K1: f64 = 1.2;
const B: f64 = 0.75;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "for", "from", "how", "i", "in", "into", "is", "it", "its",
    "me", "my", "of", "on", "or", "our", "please", "should", "so", "that", "the", "their", "them", "then", "there",
    "this", "to", "us", "was", "we", "what", "when", "which", "while", "who", "will", "with", "you", "your",
];

/// Lowercase words of two letters or more, stopwords dropped, a plural `s` cut.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.len() >= 3 && !stem.ends_with('s') => stem.to_owned(),
            _ => w,
        })
        .collect()
}

/// Most distinct words of a query that are scored.
const MOST_QUERY_WORDS: usize = 512;

/// BM25 over the candidates' texts, as an inverted index: a query costs the postings of its
/// own words, not a pass over every candidate.
#[derive(Default)]
pub struct Index {
    /// For each word, the candidates it occurs in and how often.
    postings: HashMap<String, Vec<(usize, f64)>>,
    lengths: Vec<f64>,
    average: f64,
}

impl Index {
    pub fn new(candidates: &[Candidate]) -> Index {
        let mut postings: HashMap<String, Vec<(usize, f64)>> = HashMap::new();
        let mut lengths = Vec::with_capacity(candidates.len());
        for (doc, c) in candidates.iter().enumerate() {
            let words = tokens(&c.text());
            lengths.push(words.len() as f64);
            let mut tf: BTreeMap<String, f64> = BTreeMap::new();
            for w in words {
                *tf.entry(w).or_default() += 1.0;
            }
            for (w, f) in tf {
                postings.entry(w).or_default().push((doc, f));
            }
        }
        let average = (lengths.iter().sum::<f64>() / lengths.len().max(1) as f64).max(1.0);
        Index {
            postings,
            lengths,
            average,
        }
    }

    /// Each candidate's score for `query`, in the candidates' order. Words are taken in
    /// sorted order, so equal inputs add up to equal scores.
    pub fn scores(&self, query: &str) -> Vec<f64> {
        let n = self.lengths.len() as f64;
        let words: BTreeSet<String> = tokens(query).into_iter().collect();
        let mut scores = vec![0.0; self.lengths.len()];
        for w in words.iter().take(MOST_QUERY_WORDS) {
            let Some(docs) = self.postings.get(w) else {
                continue;
            };
            let df = docs.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(doc, f) in docs {
                let len = self.lengths[doc];
                scores[doc] += idf * f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * len / self.average));
            }
        }
        scores
    }

    /// Candidate indexes by score for `query`, best first; ties in catalog order.
    pub fn ranked(&self, query: &str) -> Vec<(usize, f64)> {
        let mut ranked: Vec<(usize, f64)> = self.scores(query).into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }
}

/// The best candidate for `text`: the best match, else the best match of the whole task,
/// else the first agent by name. With the words it matched on.
pub fn best_for(catalog: &Catalog, index: &Index, text: &str, task: &str) -> (usize, Vec<String>) {
    for query in [text, task] {
        if let Some(&(i, score)) = index.ranked(query).first()
            && score > 0.0
        {
            let doc: HashSet<String> = tokens(&catalog.candidates[i].text()).into_iter().collect();
            let mut matched: Vec<String> = tokens(query).into_iter().filter(|w| doc.contains(w)).collect();
            matched.dedup();
            return (i, matched);
        }
    }
    let first = catalog
        .candidates
        .iter()
        .position(|c| c.kind == Kind::Agent)
        .unwrap_or(0);
    (first, Vec::new())
}

/// The parts of a task: its list items when it has several, else its sentences (and
/// clauses joined by "then"), at most `most`.
fn parts(task: &str, most: usize) -> Vec<String> {
    let items: Vec<String> = task
        .lines()
        .map(str::trim)
        .filter_map(|l| {
            let rest = l.trim_start_matches(|c: char| c.is_ascii_digit());
            let marked = rest.len() < l.len() && (rest.starts_with('.') || rest.starts_with(')'));
            let bullet = l.starts_with("- ") || l.starts_with("* ");
            (marked || bullet).then(|| rest.trim_start_matches(['.', ')', '-', '*']).trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .collect();
    let mut found = if items.len() >= 2 {
        items
    } else {
        let mut sentences = Vec::new();
        let mut current = String::new();
        let text = task.replace(", then ", ". ").replace(" then ", ". ");
        for c in text.chars() {
            current.push(c);
            if matches!(c, '.' | '!' | '?' | ';' | '\n') {
                sentences.push(std::mem::take(&mut current));
            }
        }
        sentences.push(current);
        sentences
            .into_iter()
            .map(|s| s.trim().trim_end_matches(['.', ';']).trim().to_owned())
            .filter(|s| tokens(s).len() >= 2)
            .collect()
    };
    if found.is_empty() {
        found.push(task.trim().to_owned());
    }
    if found.len() > most {
        let rest = found.split_off(most - 1).join(". ");
        found.push(rest);
    }
    found
}

/// Cuts `text` to at most `most` characters (the last one `…` when cut), on a character
/// boundary, without NUL (which PostgreSQL cannot store).
pub fn clip(text: &str, most: usize) -> String {
    let text = text.replace('\0', "");
    match text.char_indices().nth(most) {
        Some(_) => {
            let (at, _) = text.char_indices().nth(most.saturating_sub(1)).unwrap_or((0, ' '));
            format!("{}…", text[..at].trim_end())
        }
        None => text,
    }
}

/// Story points for a number of steps.
pub fn points_for(steps: usize) -> i64 {
    match steps {
        0 | 1 => 2,
        2 => 3,
        3 => 5,
        4 | 5 => 8,
        6..=8 => 13,
        _ => 21,
    }
}

/// The step fields that name the candidate who does it.
pub fn assign(step: &mut PlanStep, c: &Candidate) {
    step.agent_id = (c.kind == Kind::Agent).then_some(c.id);
    step.team_id = (c.kind == Kind::Team).then_some(c.id);
    step.entity_name = Some(c.name.clone());
}

/// The skills of `c` whose words occur in `text`; all of them (up to five) when none does.
pub fn skills_for(c: &Candidate, text: &str) -> Vec<String> {
    let words: HashSet<String> = tokens(text).into_iter().collect();
    let matching: Vec<String> = c
        .skills
        .iter()
        .filter(|s| {
            let own = format!(
                "{} {} {}",
                s.name,
                s.skill_type,
                s.description.as_deref().unwrap_or_default()
            );
            tokens(&own).iter().any(|w| words.contains(w))
        })
        .map(|s| s.name.clone())
        .collect();
    if matching.is_empty() {
        c.skills.iter().take(5).map(|s| s.name.clone()).collect()
    } else {
        matching
    }
}

/// The deterministic plan of `task`.
pub fn plan(catalog: &Catalog, index: &Index, task: &str, quick: bool, reason: &str) -> TaskPlan {
    let mut matched_words: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for (n, part) in parts(task, if quick { 3 } else { 8 }).iter().enumerate() {
        let (who, words) = best_for(catalog, index, part, task);
        let c = &catalog.candidates[who];
        for w in words {
            if !matched_words.contains(&w) {
                matched_words.push(w);
            }
        }
        let mut step = PlanStep {
            id: format!("step_{}", n + 1),
            title: clip(part, 80),
            description: part.clone(),
            depends_on: if n == 0 { Vec::new() } else { vec![format!("step_{n}")] },
            skills_to_use: skills_for(c, part),
            expected_output: format!("The outcome of: {}", clip(part, 200)),
            ..PlanStep::default()
        };
        assign(&mut step, c);
        steps.push(step);
    }
    let (lead, _) = best_for(catalog, index, task, task);
    let lead = recommended_entity(catalog, &steps, lead);
    let queue = catalog.best_queue();
    let names: Vec<&str> = steps.iter().filter_map(|s| s.entity_name.as_deref()).collect();
    let mut unique_names: Vec<&str> = Vec::new();
    for n in names {
        if !unique_names.contains(&n) {
            unique_names.push(n);
        }
    }
    let on = if matched_words.is_empty() {
        "no words of the task matched an agent or team; the first agent by name was chosen".to_owned()
    } else {
        format!("matched on: {}", matched_words.join(", "))
    };
    let mut prerequisites = Vec::new();
    if queue.is_none_or(|q| q.online_workers == 0) {
        prerequisites.push("Start a worker on an active worker queue: none is online now".to_owned());
    }
    TaskPlan {
        title: clip(task.lines().next().unwrap_or(task).trim(), 80),
        summary: format!(
            "{} step(s) given to {} by matching the task against agents' and teams' names, descriptions, \
             capabilities and skills ({reason}).",
            steps.len(),
            unique_names.join(", ")
        ),
        complexity: Complexity {
            story_points: points_for(steps.len()),
            confidence: "low".into(),
            reasoning: format!("{} step(s); {on}", steps.len()),
        },
        recommended_execution: RecommendedExecution {
            entity_type: lead.kind.as_str().into(),
            entity_id: Some(lead.id),
            entity_name: Some(lead.name.clone()),
            worker_queue_id: queue.map(|q| q.id),
            reasoning: match queue {
                Some(q) => format!(
                    "{} matches the task best; queue {} has {} online worker(s)",
                    lead.name, q.name, q.online_workers
                ),
                None => format!(
                    "{} matches the task best; the organization has no active queue",
                    lead.name
                ),
            },
        },
        steps,
        risks: vec![
            "Planned without a model: agents were chosen by the words they share with the task, not by \
             understanding it; review each step's assignment"
                .into(),
        ],
        prerequisites,
        success_criteria: vec!["Every step completes and produces its expected output".into()],
        ..TaskPlan::default()
    }
}

/// Who runs the whole plan: its one entity, else a team whose members do every step, else
/// the best match of the task.
fn recommended_entity<'a>(catalog: &'a Catalog, steps: &[PlanStep], best: usize) -> &'a Candidate {
    let agents: HashSet<_> = steps.iter().filter_map(|s| s.agent_id).collect();
    let teams: HashSet<_> = steps.iter().filter_map(|s| s.team_id).collect();
    if agents.len() + teams.len() == 1 {
        let id = agents.iter().chain(&teams).next();
        if let Some(c) = catalog.candidates.iter().find(|c| Some(&c.id) == id) {
            return c;
        }
    }
    if teams.is_empty()
        && let Some(team) = catalog
            .candidates
            .iter()
            .find(|c| c.kind == Kind::Team && agents.iter().all(|a| c.member_ids.contains(a)))
    {
        return team;
    }
    &catalog.candidates[best]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, description: &str) -> Candidate {
        Candidate::agent(name, description)
    }

    #[test]
    fn each_part_goes_to_the_agent_that_matches_it() {
        let catalog = Catalog {
            candidates: std::sync::Arc::new(vec![
                agent("db-admin", "Backs up and restores PostgreSQL databases"),
                agent("k8s-operator", "Deploys services to Kubernetes clusters"),
                agent("writer", "Writes release notes and documentation"),
            ]),
            ..Catalog::default()
        };
        let index = Index::new(&catalog.candidates);
        let plan = plan(
            &catalog,
            &index,
            "Back up the billing database. Then deploy the new billing service to the cluster. Write the release notes.",
            false,
            "test",
        );
        let names: Vec<_> = plan.steps.iter().map(|s| s.entity_name.clone().unwrap()).collect();
        assert_eq!(names, ["db-admin", "k8s-operator", "writer"]);
        assert_eq!(plan.steps[2].depends_on, ["step_2"]);
        assert_eq!(plan.complexity.story_points, 5);
        // Deterministic: the same input gives the same plan.
        let again = super::plan(
            &catalog,
            &index,
            "Back up the billing database. Then deploy the new billing service to the cluster. Write the release notes.",
            false,
            "test",
        );
        assert_eq!(plan, again);
    }

    #[test]
    fn list_items_are_parts_and_quick_mode_merges_the_rest() {
        let task = "Do these:\n1. check disks\n2. rotate logs\n3) restart nginx\n- update dns\n";
        assert_eq!(
            parts(task, 8),
            ["check disks", "rotate logs", "restart nginx", "update dns"]
        );
        assert_eq!(
            parts(task, 3),
            ["check disks", "rotate logs", "restart nginx. update dns"]
        );
        assert_eq!(parts("hi", 3), ["hi"]);
    }

    #[test]
    fn clip_cuts_on_characters() {
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("héllo wörld", 5).chars().count(), 5);
        assert_eq!(clip("a\0b", 5), "ab");
        assert_eq!(clip("short", 80), "short");
    }
}
