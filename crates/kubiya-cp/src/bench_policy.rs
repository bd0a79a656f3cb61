//! Policy decisions through the policy sandbox, as the server makes them: the example
//! destructive-command policy plus 9 others, all evaluated for each tool-call input in one
//! round trip to a sandbox child (`kubiya-cp policy-sandbox`), one decision at a time.

use std::time::{Duration, Instant};

use cp_policy::sandbox::{Policy, Pool, SandboxConfig};
use hdrhistogram::Histogram;
use serde_json::json;

/// The shipped example (`examples/policies/`), as users would load it.
const DESTRUCTIVE: &str = include_str!("../../../examples/policies/destructive_commands.rego");

/// Decisions for `duration`: p50/p99 per decision (10 policies each) and decisions per second.
/// The client runs on a thread of its own (the caller may be inside another runtime).
pub fn run(duration: Duration) -> anyhow::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(measure(duration))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the policy bench panicked"))?
    })
}

async fn measure(duration: Duration) -> anyhow::Result<()> {
    let mut contents = vec![DESTRUCTIVE.to_string()];
    for i in 0..9 {
        contents.push(format!(
            "package bench.p{i}\n\ndefault allow := true\n\nallow := false if input.tool.name == \"blocked_{i}\"\n\n\
             deny contains \"risky\" if input.tool.risk_level == \"critical_{i}\"\n"
        ));
    }
    let ids: Vec<String> = (0..contents.len()).map(|i| format!("bench-{i}")).collect();
    let policies: Vec<Policy<'_>> = ids
        .iter()
        .zip(&contents)
        .map(|(id, content)| Policy {
            id,
            version: 1,
            content,
        })
        .collect();
    let pool = Pool::new(SandboxConfig::current_exe(&["policy-sandbox"]));
    for content in &contents {
        pool.compile(content).await?.map_err(|e| anyhow::anyhow!(e))?;
    }
    let inputs = [
        json!({"action": "tool_execution", "tool": {"name": "shell", "arguments": {"command": "ls -la /tmp"}, "risk_level": "low"}}),
        json!({"action": "tool_execution", "tool": {"name": "shell", "arguments": {"command": "rm -rf /"}, "risk_level": "high"}}),
    ];
    let limit = Duration::from_millis(100);
    // The first decision sends and compiles the policies; later ones only name them.
    pool.evaluate(&policies, &inputs[0], limit).await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut decisions, mut denied) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < duration {
        let t = Instant::now();
        let verdicts = pool
            .evaluate(&policies, &inputs[(decisions % 2) as usize], limit)
            .await?;
        let allowed = verdicts.iter().all(|v| v.as_ref().is_ok_and(|v| v.allowed()));
        hist.record(t.elapsed().as_nanos().max(1) as u64)?;
        decisions += 1;
        denied += u64::from(!allowed);
    }
    println!();
    println!(
        "policy decision, 10 policies incl. the destructive-command one, through the policy sandbox \
         (one client): {:.0} decisions/s, p50 {:.1} µs, p99 {:.1} µs ({denied} of {decisions} denied)",
        decisions as f64 / started.elapsed().as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    );
    Ok(())
}
