//! The sandbox child: reads requests on stdin, compiles and evaluates, answers on stdout.
//! It runs the untrusted Rego, so whatever kills it (an allocation past its memory limit, a
//! stack overflow, the parent's kill) kills only it.

use std::io::{BufReader, BufWriter, Write};
use std::time::{Duration, Instant};

use cp_types::bounded::BoundedMap;

use super::TIMER_MESSAGE;
use super::protocol::{ChildPolicy, ChildRequest, MAGIC, Reply, encode_frame, read_frame};
use crate::{CompileError, Compiled, Input, compile};

/// Most compiled policies a child keeps; past it the oldest make room (the parent resends
/// content on a `Missing` reply).
const MAX_CACHED: usize = 4096;

/// The child's loop until stdin closes; what the hidden `policy-sandbox` command runs.
pub fn run() -> std::io::Result<()> {
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    output.write_all(MAGIC)?;
    output.flush()?;
    let mut cache = Cache {
        map: BoundedMap::new(MAX_CACHED),
    };
    let (mut frame, mut reply) = (Vec::new(), Vec::new());
    while read_frame(&mut input, &mut frame)? {
        let answer = match serde_json::from_slice::<ChildRequest>(&frame) {
            Ok(ChildRequest::Compile { content }) => match compile(&content) {
                Ok(c) => Reply::Compiled {
                    package: c.package().to_string(),
                },
                Err(e) => Reply::Refused(e),
            },
            Ok(ChildRequest::Evaluate {
                policies,
                input,
                limit_us,
            }) => cache.evaluate(policies, Input(input), Duration::from_micros(limit_us)),
            Err(e) => Reply::Malformed(e.to_string()),
        };
        encode_frame(&mut reply, &answer)?;
        output.write_all(&reply)?;
        output.flush()?;
    }
    Ok(())
}

/// Compiled policies by id, with their version.
struct Cache {
    map: BoundedMap<String, (i64, Result<Compiled, CompileError>)>,
}

impl Cache {
    /// Every policy of one decision, all within `limit` together.
    fn evaluate(&mut self, policies: Vec<ChildPolicy>, input: Input, limit: Duration) -> Reply {
        let started = Instant::now();
        let held = |p: &ChildPolicy, map: &BoundedMap<_, (i64, _)>| map.get(&p.id).is_some_and(|e| e.0 == p.version);
        if policies.iter().any(|p| p.content.is_none() && !held(p, &self.map)) {
            return Reply::Missing;
        }
        let mut verdicts = Vec::with_capacity(policies.len());
        for p in policies {
            if let Some(content) = &p.content
                && !held(&p, &self.map)
            {
                self.map.insert(p.id.clone(), (p.version, compile(content)));
            }
            let left = limit.saturating_sub(started.elapsed());
            let verdict = match self.map.get_mut(&p.id).map(|e| &mut e.1) {
                Some(Ok(_)) if left.is_zero() => Err(time_limit(limit)),
                Some(Ok(c)) => c.evaluate_input(&input, left).map_err(|e| {
                    if e.0.contains(TIMER_MESSAGE) {
                        time_limit(limit)
                    } else {
                        e.0
                    }
                }),
                Some(Err(e)) => Err(format!("does not compile: {e}")),
                None => Err("not sent".to_string()),
            };
            verdicts.push(verdict);
        }
        Reply::Verdicts(verdicts)
    }
}

fn time_limit(limit: Duration) -> String {
    format!("exceeds the time limit ({} ms)", limit.as_millis())
}
