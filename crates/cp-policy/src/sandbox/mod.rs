//! Rego compiled and evaluated in bounded child processes, so no policy text can take the
//! server down: a child has an address-space limit (an allocation past it aborts the child,
//! not the server), the evaluator's timer, and the parent's wall-clock kill. A child that
//! dies is respawned on the next request; the request it was serving gets an error naming
//! the limit it hit (told apart by what the child wrote on stderr before dying).

mod affinity;
mod child;
mod protocol;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cp_types::bounded::BoundedMap;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{Mutex, MutexGuard};

pub use child::run as run_child;
use protocol::{PolicyRef, Reply, Request, encode_frame, read_frame_async};

use crate::{CompileError, Verdict};

/// The budget a policy exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    Memory,
    Time,
    Nesting,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Memory => "memory",
            Limit::Time => "time",
            Limit::Nesting => "nesting",
        }
    }
}

/// A request the sandbox could not answer: a limit the policy hit, or the sandbox itself
/// failing (it cannot be started, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SandboxError {
    pub limit: Option<Limit>,
    pub message: String,
}

/// How children are started and bounded.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The executable and arguments that run [`run_child`].
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The child's whole environment (it starts from an empty one: nothing of the server's).
    pub env: Vec<(OsString, OsString)>,
    /// The child's address-space limit, in bytes.
    pub memory_bytes: u64,
    /// Children in the pool (each serves one request at a time).
    pub children: usize,
    /// How long compiling one policy may take, checking its rules included.
    pub compile_limit: Duration,
    /// What a child may take past an evaluation's own limit before it is killed (its
    /// first decision compiles the policies too).
    pub kill_margin: Duration,
}

impl SandboxConfig {
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>) -> SandboxConfig {
        SandboxConfig {
            program: program.into(),
            args,
            env: Vec::new(),
            memory_bytes: 512 << 20,
            children: std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
            compile_limit: Duration::from_secs(2),
            kill_margin: Duration::from_millis(500),
        }
    }

    /// This executable run with `args` (production: `kubiya-cp policy-sandbox`).
    pub fn current_exe(args: &[&str]) -> SandboxConfig {
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kubiya-cp"));
        SandboxConfig::new(program, args.iter().map(OsString::from).collect())
    }
}

/// A policy of one decision.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Unique per policy (its id): children cache compiled policies by it.
    pub id: &'a str,
    pub version: i64,
    pub content: &'a str,
}

/// What each policy of a decision said, in order: a verdict or the error it hit.
pub type Verdicts = Vec<Result<Verdict, String>>;

/// Children started on first use, each serving one request at a time.
pub struct Pool {
    config: SandboxConfig,
    slots: Vec<Mutex<Option<Child>>>,
    next: AtomicUsize,
}

/// What regorus says when its timer stops an evaluation.
pub(crate) const TIMER_MESSAGE: &str = "exceeded time limit";

/// A child's place in the pool, held while it serves one request.
type Slot<'a> = MutexGuard<'a, Option<Child>>;

/// How long the caller waits for a reply without sleeping (a decision takes tens of µs);
/// past it, it sleeps until the reply comes.
const SPIN: Duration = Duration::from_micros(500);

/// Most (id, version) pairs remembered per child; a forgotten one is simply sent again.
const MAX_KNOWN: usize = 4096;

struct Child {
    process: tokio::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
    /// The policy versions this child has been sent.
    known: BoundedMap<String, i64>,
    buf: Vec<u8>,
    /// The CPU the child was last moved to.
    cpu: Option<i32>,
}

impl Pool {
    pub fn new(config: SandboxConfig) -> Pool {
        let slots = (0..config.children.max(1)).map(|_| Mutex::new(None)).collect();
        Pool {
            config,
            slots,
            next: AtomicUsize::new(0),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Compiles `content` in a child: its package, or why it does not compile (a limit hit
    /// is a [`CompileError`] naming it). `Err` only when the sandbox itself failed.
    pub async fn compile(&self, content: &str) -> Result<Result<String, CompileError>, SandboxError> {
        let mut slot = self.acquire().await;
        let request = Request::Compile { content };
        match self.round_trip(&mut slot, &request, self.config.compile_limit).await {
            Ok(Reply::Compiled { package }) => Ok(Ok(package)),
            Ok(Reply::Refused(e)) => Ok(Err(e)),
            Ok(_) => Err(failed("an unexpected reply to a compile request")),
            Err(SandboxError {
                limit: Some(limit),
                message,
            }) => Ok(Err(CompileError {
                message,
                line: None,
                limit: Some(limit),
            })),
            Err(e) => Err(e),
        }
    }

    /// Evaluates every policy of one decision for `input`, all within `limit`, in one round
    /// trip to one child (which runs on the caller's CPU meanwhile, see [`affinity`]). `Err` when the child could not answer (it hit a limit and died).
    pub async fn evaluate(
        &self,
        policies: &[Policy<'_>],
        input: &serde_json::Value,
        limit: Duration,
    ) -> Result<Verdicts, SandboxError> {
        let slot = self.acquire().await;
        self.evaluate_on(slot, policies, input, limit).await
    }

    /// One round trip (two when the child lost its policies) to the child in `slot`.
    async fn evaluate_on(
        &self,
        mut slot: Slot<'_>,
        policies: &[Policy<'_>],
        input: &serde_json::Value,
        limit: Duration,
    ) -> Result<Verdicts, SandboxError> {
        let deadline = limit + self.config.kill_margin;
        for resend in [false, true] {
            let known = slot.as_ref().map(|c| &c.known);
            let refs: Vec<PolicyRef<'_>> = policies
                .iter()
                .map(|p| PolicyRef {
                    id: p.id,
                    version: p.version,
                    content: (resend || known.and_then(|k| k.get(p.id)) != Some(&p.version)).then_some(p.content),
                })
                .collect();
            let request = Request::Evaluate {
                policies: &refs,
                input,
                limit_us: limit.as_micros() as u64,
            };
            match self.round_trip(&mut slot, &request, deadline).await? {
                Reply::Verdicts(verdicts) if verdicts.len() == policies.len() => {
                    if let Some(child) = slot.as_mut() {
                        for p in policies {
                            child.known.insert(p.id.to_string(), p.version);
                        }
                    }
                    return Ok(verdicts);
                }
                Reply::Missing => {
                    if let Some(child) = slot.as_mut() {
                        child.known.clear();
                    }
                }
                Reply::Malformed(e) => return Err(failed(&format!("the sandbox refused the request: {e}"))),
                _ => return Err(failed("an unexpected reply to an evaluation")),
            }
        }
        Err(failed("the sandbox kept losing the policies it was sent"))
    }

    /// A free slot if there is one, else the next one in turn once it is free.
    async fn acquire(&self) -> MutexGuard<'_, Option<Child>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        for i in 0..n {
            if let Ok(slot) = self.slots[(start + i) % n].try_lock() {
                return slot;
            }
        }
        self.slots[start % n].lock().await
    }

    /// Sends `request` to the slot's child (started if needed) and reads its reply within
    /// `deadline`. A child that does not answer in time is killed; one that dies is
    /// reaped; either way the slot is left empty for a fresh child.
    async fn round_trip(
        &self,
        slot: &mut Option<Child>,
        request: &Request<'_>,
        deadline: Duration,
    ) -> Result<Reply, SandboxError> {
        if slot.is_none() {
            *slot = Some(
                self.spawn()
                    .await
                    .map_err(|e| failed(&format!("cannot start the policy sandbox: {e}")))?,
            );
        }
        let Some(child) = slot.as_mut() else {
            return Err(failed("no sandbox child"));
        };
        encode_frame(&mut child.buf, request).map_err(|e| failed(&e.to_string()))?;
        if let Some(pid) = child.process.id() {
            child.cpu = affinity::follow_caller(pid, child.cpu);
        }
        let exchange = async {
            child.stdin.write_all(&child.buf).await?;
            if child.stdout.buffer().is_empty() {
                affinity::spin_until_readable(child.stdout.get_ref(), SPIN);
            }
            read_frame_async(&mut child.stdout, &mut child.buf).await
        };
        let outcome = tokio::time::timeout(deadline, exchange).await;
        let reply = match outcome {
            Ok(Ok(())) => serde_json::from_slice::<Reply>(&child.buf).map_err(|e| failed(&e.to_string())),
            Ok(Err(_)) => Err(self.died(child, false).await),
            Err(_) => Err(self.died(child, true).await),
        };
        if reply.is_err() {
            *slot = None;
        }
        reply
    }

    /// Why `child` stopped answering; kills it first when it ran out of time.
    async fn died(&self, child: &mut Child, timed_out: bool) -> SandboxError {
        if timed_out {
            let _ = child.process.start_kill();
        }
        let status = tokio::time::timeout(Duration::from_secs(2), child.process.wait()).await;
        let mut stderr = Vec::new();
        let mut bounded = (&mut child.stderr).take(64 << 10);
        let _ = tokio::time::timeout(Duration::from_secs(1), bounded.read_to_end(&mut stderr)).await;
        let stderr = String::from_utf8_lossy(&stderr);
        let limit = if stderr.contains("memory allocation of") {
            Some(Limit::Memory)
        } else if stderr.contains("overflowed its stack") {
            Some(Limit::Nesting)
        } else if timed_out {
            Some(Limit::Time)
        } else {
            None
        };
        let message = match limit {
            Some(Limit::Memory) => format!("exceeds the memory limit ({} MiB)", self.config.memory_bytes >> 20),
            Some(Limit::Nesting) => "exceeds the nesting limit (the evaluator ran out of stack)".to_string(),
            Some(Limit::Time) => "exceeds the time limit (the evaluation did not stop in time)".to_string(),
            None => {
                let status = status.map_or("still running".to_string(), |s| format!("{s:?}"));
                tail(&format!("the policy sandbox stopped ({status}): {}", stderr.trim()))
            }
        };
        SandboxError { limit, message }
    }

    async fn spawn(&self) -> io::Result<Child> {
        let mut command = tokio::process::Command::new(&self.config.program);
        command
            .args(&self.config.args)
            .env_clear()
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let memory = self.config.memory_bytes as libc::rlim_t;
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (setrlimit, prctl) on a value copied before the fork.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: memory,
                    rlim_max: memory,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The children die with the server rather than linger.
                #[cfg(target_os = "linux")]
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut process = command.spawn()?;
        let missing = || io::Error::other("a pipe of the child is missing");
        let stdin = process.stdin.take().ok_or_else(missing)?;
        let mut stdout = BufReader::new(process.stdout.take().ok_or_else(missing)?);
        let stderr = process.stderr.take().ok_or_else(missing)?;
        let handshake = async {
            let mut line = Vec::new();
            for _ in 0..64 {
                line.clear();
                if stdout.read_until(b'\n', &mut line).await? == 0 {
                    break;
                }
                if line.ends_with(protocol::MAGIC) {
                    return Ok(());
                }
            }
            Err(io::Error::other("the program does not run the policy sandbox"))
        };
        match tokio::time::timeout(Duration::from_secs(10), handshake).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("the policy sandbox did not start in time")),
        }
        Ok(Child {
            process,
            stdin,
            stdout,
            stderr,
            known: BoundedMap::new(MAX_KNOWN),
            buf: Vec::new(),
            cpu: None,
        })
    }
}

fn failed(message: &str) -> SandboxError {
    SandboxError {
        limit: None,
        message: message.to_string(),
    }
}

/// At most the last part of a long message (a child's stderr can be long).
fn tail(message: &str) -> String {
    const MAX: usize = 2000;
    if message.len() <= MAX {
        return message.to_string();
    }
    let mut at = message.len() - MAX;
    while !message.is_char_boundary(at) {
        at += 1;
    }
    format!("…{}", &message[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Set in the environment of a test binary started as a sandbox child.
    const CHILD_ENV: &str = "KCP_POLICY_SANDBOX_TEST_CHILD";

    /// The child of these tests: this test binary, running only this test, which serves the
    /// protocol when [`CHILD_ENV`] is set and does nothing otherwise.
    #[test]
    fn sandbox_child_entry() {
        if std::env::var_os(CHILD_ENV).is_some() {
            std::process::exit(i32::from(run_child().is_err()));
        }
    }

    fn pool(children: usize) -> Pool {
        let args = [
            "sandbox::tests::sandbox_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ];
        let mut config = SandboxConfig::current_exe(&args);
        config.env = vec![(CHILD_ENV.into(), "1".into())];
        config.children = children;
        Pool::new(config)
    }

    const LIMIT: Duration = Duration::from_millis(100);
    const BOMB: &str = "package x\nallow if { count(numbers.range(1, 100000000000)) > 0 }\n";
    const BY_INPUT: &str = "package by_input\nallow if { count(numbers.range(1, input.n)) > 0 }\n";

    fn policy<'a>(id: &'a str, content: &'a str) -> Policy<'a> {
        Policy {
            id,
            version: 1,
            content,
        }
    }

    #[tokio::test]
    async fn an_allocation_bomb_is_a_memory_error_and_the_pool_goes_on() {
        let pool = pool(1);
        let refused = pool.compile(BOMB).await.unwrap().unwrap_err();
        assert_eq!(refused.limit, Some(Limit::Memory), "{refused:?}");
        assert!(refused.message.contains("memory limit"), "{refused:?}");
        assert_eq!(pool.compile(BY_INPUT).await.unwrap().unwrap(), "data.by_input");

        // Fine at compile, a bomb for one input: that decision fails, the next one is answered.
        let policies = [policy("p", BY_INPUT)];
        let err = pool
            .evaluate(&policies, &json!({"n": 100_000_000_000u64}), LIMIT)
            .await
            .unwrap_err();
        assert_eq!(err.limit, Some(Limit::Memory), "{err:?}");
        let verdicts = pool.evaluate(&policies, &json!({"n": 3}), LIMIT).await.unwrap();
        assert_eq!(verdicts[0].as_ref().unwrap().allow, Some(true));
    }

    #[tokio::test]
    async fn deep_nesting_is_a_nesting_error() {
        let pool = pool(1);
        let depth = 48;
        let content = format!(
            "package deep\nallow if {{ {}1{} }}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let refused = pool.compile(&content).await.unwrap().unwrap_err();
        // The parser backtracks exponentially on deep brackets before its own depth bound
        // (or runs out of stack): either way a limit, and the pool goes on.
        assert!(
            matches!(refused.limit, Some(Limit::Nesting | Limit::Time)),
            "{refused:?}"
        );
        assert_eq!(pool.compile(BY_INPUT).await.unwrap().unwrap(), "data.by_input");
    }

    #[tokio::test]
    async fn a_child_that_does_not_answer_in_time_is_killed_and_replaced() {
        let mut config = pool(1).config.clone();
        config.kill_margin = Duration::ZERO;
        config.memory_bytes = 4 << 30;
        let pool = Pool::new(config);
        let policies = [policy("p", BY_INPUT)];
        let err = pool
            .evaluate(&policies, &json!({"n": 5_000_000}), Duration::from_millis(5))
            .await
            .unwrap_err();
        assert_eq!(err.limit, Some(Limit::Time), "{err:?}");
        let verdicts = pool
            .evaluate(&policies, &json!({"n": 3}), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(verdicts[0].as_ref().unwrap().allow, Some(true));
    }

    #[tokio::test]
    async fn a_decision_evaluates_every_policy_and_a_slow_one_is_a_time_error() {
        let pool = pool(2);
        let slow = "package slow\nallow if { count([x | some x in numbers.range(1, input.n); some y in numbers.range(1, input.n)]) > 0 }\n";
        let gate = "package gate\nallow if input.user == \"root\"\n";
        let broken = "package broken\nallow if {";
        let policies = [policy("slow", slow), policy("gate", gate), policy("broken", broken)];
        for _ in 0..2 {
            let verdicts = pool
                .evaluate(&policies, &json!({"n": 3000, "user": "root"}), LIMIT)
                .await
                .unwrap();
            assert!(verdicts[0].as_ref().unwrap_err().contains("time limit"), "{verdicts:?}");
            // What time is left after the slow one runs out is none: the decision is over.
            assert!(verdicts[1].is_err(), "{verdicts:?}");
            assert!(
                verdicts[2].as_ref().unwrap_err().contains("does not compile"),
                "{verdicts:?}"
            );
        }
        let verdicts = pool
            .evaluate(&policies[1..2], &json!({"user": "bob"}), LIMIT)
            .await
            .unwrap();
        assert_eq!(verdicts[0].as_ref().unwrap().allow, None);
        // A new version is compiled again.
        let edited = [Policy {
            id: "gate",
            version: 2,
            content: "package gate\nallow := false\n",
        }];
        let verdicts = pool.evaluate(&edited, &json!({}), LIMIT).await.unwrap();
        assert_eq!(verdicts[0].as_ref().unwrap().allow, Some(false));
    }

    #[tokio::test]
    async fn a_decision_of_many_policies_keeps_its_order_on_the_callers_cpu() {
        let pool = pool(1);
        let contents: Vec<String> = (0..6)
            .map(|i| format!("package p{i}\ndeny contains \"p{i}\" if input.deny[_] == {i}\n"))
            .collect();
        let ids: Vec<String> = (0..6).map(|i| format!("p{i}")).collect();
        let policies: Vec<Policy<'_>> = ids
            .iter()
            .zip(&contents)
            .map(|(id, content)| Policy {
                id,
                version: 1,
                content,
            })
            .collect();
        for deny in [vec![1, 4], vec![0, 5], vec![]] {
            let verdicts = pool.evaluate(&policies, &json!({"deny": deny}), LIMIT).await.unwrap();
            let denied: Vec<usize> = (0..6).filter(|i| !verdicts[*i].as_ref().unwrap().allowed()).collect();
            assert_eq!(denied, deny, "{verdicts:?}");
            for (i, v) in verdicts.iter().enumerate() {
                if deny.contains(&i) {
                    assert_eq!(v.as_ref().unwrap().violations, vec![format!("p{i}")]);
                }
            }
        }
        // The child was moved to one CPU (the caller's at the time).
        let pid = pool.slots[0].lock().await.as_ref().unwrap().process.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        assert!(cpus.trim().parse::<u32>().is_ok(), "{cpus}");
    }

    #[tokio::test]
    async fn a_program_that_is_not_a_sandbox_is_an_error_not_a_limit() {
        let mut config = SandboxConfig::new("/bin/true", Vec::new());
        config.children = 1;
        let err = Pool::new(config).compile(BY_INPUT).await.unwrap_err();
        assert_eq!(err.limit, None, "{err:?}");
    }
}
