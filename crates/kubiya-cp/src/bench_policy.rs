//! Policy decisions in-process: the example destructive-command policy plus 9 others, all evaluated
//! for each tool-call input, as a decision for one entity with 10 resolved policies does.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

/// The shipped example (`examples/policies/`), as users would load it.
const DESTRUCTIVE: &str = include_str!("../../../examples/policies/destructive_commands.rego");

/// Decisions for `duration`: p50/p99 per decision (10 policies each) and decisions per second.
pub fn run(duration: Duration) -> anyhow::Result<()> {
    let mut policies = vec![cp_policy::compile(DESTRUCTIVE).map_err(|e| anyhow::anyhow!(e))?];
    for i in 0..9 {
        let other = format!(
            "package bench.p{i}\n\ndefault allow := true\n\nallow := false if input.tool.name == \"blocked_{i}\"\n\n\
             deny contains \"risky\" if input.tool.risk_level == \"critical_{i}\"\n"
        );
        policies.push(cp_policy::compile(&other).map_err(|e| anyhow::anyhow!(e))?);
    }
    let inputs = [
        json!({"action": "tool_execution", "tool": {"name": "shell", "arguments": {"command": "ls -la /tmp"}, "risk_level": "low"}}),
        json!({"action": "tool_execution", "tool": {"name": "shell", "arguments": {"command": "rm -rf /"}, "risk_level": "high"}}),
    ];
    let limit = Duration::from_millis(50);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut decisions, mut denied) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        let input = cp_policy::Input::new(&inputs[(decisions % 2) as usize]);
        let mut allowed = true;
        for p in &policies {
            allowed &= p.evaluate_input(&input, limit).map(|v| v.allowed()).unwrap_or(false);
        }
        hist.record(t.elapsed().as_nanos().max(1) as u64)?;
        decisions += 1;
        denied += u64::from(!allowed);
    }
    println!();
    println!(
        "policy decision, 10 policies incl. the destructive-command one (one thread): {:.0} decisions/s, \
         p50 {:.1} µs, p99 {:.1} µs ({denied} of {decisions} denied)",
        decisions as f64 / started.elapsed().as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
    Ok(())
}
