//! What running a plan may cost: each step's tokens estimated from its text, priced with the
//! model of the agent or team that runs it. The model that planned is never asked.

use cp_types::plan::{CostEstimate, LlmCost, TaskPlan};

use super::catalog::Catalog;

/// Tokens every model call carries besides the step's own text (instructions, tool schemas).
const BASE_INPUT_TOKENS: u64 = 1_500;
/// Tokens a dependency's output adds to a step's prompt.
const DEPENDENCY_TOKENS: u64 = 600;
/// Tokens a step answers with.
const OUTPUT_TOKENS: u64 = 700;
/// Model calls one step makes (a tool call and the answer after it).
const CALLS_PER_STEP: u64 = 2;

/// About four characters per token.
fn tokens_of(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

pub fn estimate(plan: &TaskPlan, catalog: &Catalog, default_model: Option<&str>) -> CostEstimate {
    let mut costs: Vec<LlmCost> = Vec::new();
    for step in &plan.steps {
        let Some(who) = catalog
            .candidates
            .iter()
            .find(|c| Some(c.id) == step.agent_id.or(step.team_id))
        else {
            continue;
        };
        let Some(model) = who.model.as_deref().or(default_model) else {
            continue;
        };
        // A team's coordinator and each member it delegates to each make their calls.
        let callers = 1 + who.members.len() as u64;
        let input = (BASE_INPUT_TOKENS
            + tokens_of(&step.description)
            + tokens_of(&step.expected_output)
            + DEPENDENCY_TOKENS * step.depends_on.len() as u64)
            * CALLS_PER_STEP
            * callers;
        let output = OUTPUT_TOKENS * CALLS_PER_STEP * callers;
        match costs.iter_mut().find(|c| c.model == model) {
            Some(c) => {
                c.steps.push(step.id.clone());
                c.estimated_input_tokens += input;
                c.estimated_output_tokens += output;
            }
            None => costs.push(LlmCost {
                model: model.to_owned(),
                steps: vec![step.id.clone()],
                estimated_input_tokens: input,
                estimated_output_tokens: output,
                cost_usd: None,
            }),
        }
    }
    let mut total = 0.0;
    for c in &mut costs {
        if let Some(p) = catalog.models.get(&c.model).and_then(|m| m.pricing) {
            let usd = (c.estimated_input_tokens as f64 * p.input_per_1k
                + c.estimated_output_tokens as f64 * p.output_per_1k)
                / 1000.0;
            let usd = (usd * 1e6).round() / 1e6;
            // Absurd prices must not store a cost JSON cannot hold.
            if usd.is_finite() {
                c.cost_usd = Some(usd);
                total += usd;
            }
        }
    }
    let total = (total * 1e6).round() / 1e6;
    CostEstimate {
        estimated_cost_usd: if total.is_finite() { total } else { 0.0 },
        llm_costs: costs,
    }
}
