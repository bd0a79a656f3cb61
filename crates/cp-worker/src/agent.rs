//! The `default` runtime: an agent loop. The system prompt, the conversation so far and the
//! skills as tools go to the model; tool calls are decided by the control plane's policies,
//! run, and their results sent back, until the model answers or `max_turns` runs out.

use std::sync::Arc;
use std::time::Duration;

use cp_llm::{ChatRequest, Client, Delta, INVALID_ARGUMENTS, Message, ModelConfig, Provider, ToolSpec};
use cp_types::execution::{Claim, FailureKind, RunModel, Usage};
use cp_types::org::PolicyEnforcement;
use cp_types::skill::ResolvedSkill;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ToolSettings;
use crate::client::ControlPlane;
use crate::mcp;
use crate::tools::{RunPlace, Tool, ToolKind, add_mcp_tools, mcp_servers, tool_name, tools};

/// How a run ended when it did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run cannot succeed as configured (no model, no key, a refused request).
    #[error("{0}")]
    Fatal(String),
    /// Worth another attempt (the provider was unavailable).
    #[error("{0}")]
    Retryable(String),
    /// Cannot succeed until an operator acts (a refused provider key, a missing runtime).
    #[error("{1}")]
    NeedsOperator(FailureKind, String),
    /// The lease is gone: the run was taken away, nothing more may be reported.
    #[error("the run was taken away from this worker")]
    Lost,
}

/// Events of one run, posted in order by a background flusher so streamed chunks reach
/// followers within a fraction of a second while a control plane that is away only delays
/// them (they stay buffered, in order, until it answers).
#[derive(Clone)]
pub struct Emitter {
    pending: Arc<Mutex<Vec<Value>>>,
    /// One flush at a time, so batches reach the control plane in order.
    flushing: Arc<tokio::sync::Mutex<()>>,
    cp: ControlPlane,
    execution: Uuid,
    lease: Uuid,
}

impl Emitter {
    pub fn new(cp: ControlPlane, execution: Uuid, lease: Uuid) -> Emitter {
        Emitter {
            pending: Arc::default(),
            flushing: Arc::default(),
            cp,
            execution,
            lease,
        }
    }

    pub fn emit(&self, event_type: &str, data: Value) {
        let event = json!({"event_type": event_type, "data": data, "timestamp": chrono::Utc::now()});
        self.pending.lock().push(event);
    }

    /// Sends what is pending, in batches the control plane accepts (at most 500 events), each
    /// with its own idempotency key so a batch whose answer was lost is not stored twice when
    /// it is sent again. While the control plane is away (no answer, 408, 429, 5xx) it waits
    /// and retries; a stale lease is `Lost`; any other refusal ends the run.
    pub async fn flush(&self) -> Result<(), RunError> {
        let _one_at_a_time = self.flushing.lock().await;
        let mut delay = Duration::from_millis(200);
        let mut key = Uuid::now_v7();
        loop {
            let batch: Vec<Value> = {
                let mut pending = self.pending.lock();
                let n = pending.len().min(MAX_BATCH);
                pending.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            match self.cp.events(self.execution, self.lease, &batch, key).await {
                Ok(()) => {
                    key = Uuid::now_v7();
                    delay = Duration::from_millis(200);
                }
                Err(e) if e.lease_gone() => return Err(RunError::Lost),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, execution = %self.execution, "events not delivered yet; retrying");
                    // Put them back in front, keeping the order; the retry reuses the key.
                    {
                        let mut pending = self.pending.lock();
                        let later = std::mem::take(&mut *pending);
                        *pending = batch;
                        pending.extend(later);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    return Err(RunError::Fatal(format!(
                        "the control plane refused the run's events: {e}"
                    )));
                }
            }
        }
    }
}

/// Most events in one post (the control plane takes up to 1,000).
const MAX_BATCH: usize = 500;

/// The model client for a claim: the claim's base URL and key, else the worker host's
/// `*_BASE_URL` / `*_API_KEY`. A remote provider without a key fails with which key it needs.
pub fn model_client(model: Option<&RunModel>) -> Result<Client, RunError> {
    let m = model.ok_or_else(|| RunError::Fatal("the agent has no model (set its model_id)".into()))?;
    let provider = Provider::for_name(&m.provider);
    let mut config = ModelConfig::new(provider, m.provider_model.clone());
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let custom_url = m.base_url.clone().or_else(|| env(provider.base_url_variable()));
    if let Some(url) = &custom_url {
        config.base_url = url.clone();
    }
    config.api_key = m.api_key.clone().or_else(|| env(provider.key_variable()));
    if config.api_key.is_none() && custom_url.is_none() {
        let secret = m
            .api_key_secret
            .as_deref()
            .map(|s| format!("a secret named {s}, or "))
            .unwrap_or_default();
        return Err(RunError::Fatal(format!(
            "model {} needs an API key: {secret}{} on the worker host",
            m.value,
            provider.key_variable()
        )));
    }
    Ok(Client::new(config))
}

/// The conversation so far: the stored messages (the prompt is the last user one).
fn conversation(claim: &Claim) -> Vec<Message> {
    let mut messages: Vec<Message> = claim
        .history
        .iter()
        .filter_map(|m| match m.role.as_str() {
            "user" => Some(Message::User {
                content: m.content.clone(),
            }),
            "assistant" if !m.content.is_empty() => Some(Message::Assistant {
                content: m.content.clone(),
                tool_calls: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    if messages.is_empty() {
        messages.push(Message::User {
            content: claim.execution.prompt.clone(),
        });
    }
    messages
}

/// One agent loop: a model, a system prompt and tools, until the model answers. A team's
/// coordinator is one too, with its members as tools.
struct Agent<'a> {
    cp: &'a ControlPlane,
    settings: &'a ToolSettings,
    claim: &'a Claim,
    emit: &'a Emitter,
    client: Client,
    /// For the cost of each call.
    model: Option<&'a RunModel>,
    system: Option<String>,
    tools: Vec<Tool>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    max_turns: u64,
    /// A team member's id and name: its events say so.
    member: Option<(Uuid, String)>,
}

fn usage_of(u: cp_llm::Usage) -> Usage {
    Usage {
        prompt_tokens: u.prompt_tokens as i64,
        completion_tokens: u.completion_tokens as i64,
        total_tokens: (u.prompt_tokens + u.completion_tokens) as i64,
        cost_usd: None,
    }
}

fn llm_error(e: cp_llm::LlmError) -> RunError {
    match e {
        cp_llm::LlmError::Unavailable(_) | cp_llm::LlmError::Timeout(_) | cp_llm::LlmError::Network(_) => {
            RunError::Retryable(e.to_string())
        }
        cp_llm::LlmError::Auth(_) => RunError::NeedsOperator(FailureKind::ProviderAuthRefused, e.to_string()),
        other => RunError::Fatal(other.to_string()),
    }
}

impl<'a> Agent<'a> {
    /// Event data, tagged with the member when this loop is one.
    fn tagged(&self, mut data: Value) -> Value {
        if let Some((id, name)) = &self.member {
            data["member_id"] = json!(id);
            data["member_name"] = json!(name);
        }
        data
    }

    fn answer(&'a self, messages: Vec<Message>) -> BoxFuture<'a, Result<(String, Usage), RunError>> {
        async move {
            let mut req = ChatRequest {
                system: self.system.clone(),
                messages,
                tools: self.tools.iter().map(|t| t.spec.clone()).collect(),
                temperature: self.temperature,
                max_tokens: self.max_tokens,
            };
            let (chunk_event, final_event) = match self.member {
                Some(_) => ("member_message_chunk", "member_message"),
                None => ("message_chunk", "message"),
            };
            let mut usage = Usage::default();
            for _ in 0..self.max_turns {
                let completion = self
                    .client
                    .stream(&req, |delta| match delta {
                        Delta::Text(t) => {
                            let data = self.tagged(json!({"role": "assistant", "content": t}));
                            self.emit.emit(chunk_event, data)
                        }
                        Delta::Thinking(t) => self.emit.emit("thinking", self.tagged(json!({"content": t}))),
                        Delta::ToolCall(_) => {}
                    })
                    .await
                    .map_err(llm_error)?;
                let mut spent = usage_of(completion.usage);
                spent.cost_usd = self.model.as_ref().and_then(|m| m.cost(&spent));
                usage.add(&spent);
                if completion.tool_calls.is_empty() {
                    let data = self.tagged(json!({"role": "assistant", "content": completion.text}));
                    self.emit.emit(final_event, data);
                    return Ok((completion.text, usage));
                }
                req.messages.push(Message::Assistant {
                    content: completion.text.clone(),
                    tool_calls: completion.tool_calls.clone(),
                });
                for call in &completion.tool_calls {
                    let started = json!({"tool_name": call.name, "tool_input": call.arguments, "call_id": call.id});
                    self.emit.emit("tool_started", self.tagged(started));
                    let (output, is_error, spent) = self.call_tool(call).await?;
                    usage.add(&spent);
                    let completed = json!({"tool_name": call.name, "call_id": call.id, "tool_output": output, "is_error": is_error});
                    self.emit.emit("tool_completed", self.tagged(completed));
                    req.messages.push(Message::Tool {
                        call_id: call.id.clone(),
                        content: output,
                        is_error,
                    });
                }
            }
            Err(RunError::Fatal(format!(
                "no answer within {} turns (llm_config.max_turns, or a team's configuration.max_rounds)",
                self.max_turns
            )))
        }
        .boxed()
    }

    /// One tool call: the policy decision first (unless enforcement is off), then the tool.
    /// Delegating to a member runs the member's own loop; its usage counts too.
    async fn call_tool(&self, call: &cp_llm::ToolCall) -> Result<(String, bool, Usage), RunError> {
        let Some(tool) = self.tools.iter().find(|t| t.spec.name == call.name) else {
            return Ok((format!("there is no tool named {}", call.name), true, Usage::default()));
        };
        if call.arguments.get(INVALID_ARGUMENTS).is_some() {
            let refusal = format!("the arguments of {} were not valid JSON; call it again", call.name);
            return Ok((refusal, true, Usage::default()));
        }
        let risk = tool.kind.risk(&call.arguments);
        let tag = |d: Value| self.tagged(d);
        if let Some(refusal) =
            policy_refusal(self.cp, self.claim, self.emit, &call.name, &call.arguments, risk, &tag).await
        {
            return Ok((refusal, true, Usage::default()));
        }
        if let ToolKind::Delegate(index) = tool.kind {
            let task = call.arguments["task"].as_str().unwrap_or_default().to_string();
            let member = member_agent(self.cp, self.claim, self.emit, self.settings, index).await?;
            let (answer, usage) = member.answer(vec![Message::User { content: task }]).await?;
            return Ok((answer, false, usage));
        }
        // Events a tool reports (a generated file, a diagram) name the call they come from.
        let note = |event_type: &str, mut data: Value| {
            data["call_id"] = json!(call.id);
            data["tool_name"] = json!(call.name);
            self.emit.emit(event_type, self.tagged(data));
        };
        let (output, is_error) = tool.kind.run(&call.arguments, &note).await;
        Ok((output, is_error, Usage::default()))
    }
}

/// The policy decision on a tool call (unless enforcement is off), reported as a
/// `policy_decision` event; the refusal to return instead of running the tool, if any. Blocking
/// mode fails closed: no decision, no tool call. Used by every runtime.
pub(crate) async fn policy_refusal(
    cp: &ControlPlane,
    claim: &Claim,
    emit: &Emitter,
    tool: &str,
    arguments: &Value,
    risk: &str,
    tag: &(dyn Fn(Value) -> Value + Sync),
) -> Option<String> {
    if claim.policy_enforcement == PolicyEnforcement::Off {
        return None;
    }
    match cp.enforce(claim.execution.id, tool, arguments, risk).await {
        Ok(decision) => {
            if decision["policies_evaluated"].as_u64().unwrap_or(0) > 0 {
                emit.emit("policy_decision", tag(decision.clone()));
            }
            if decision["blocked"] == true {
                let why: Vec<&str> = decision["violations"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                return Some(format!("Tool execution blocked by policy: {}", why.join("; ")));
            }
            None
        }
        Err(e) if claim.policy_enforcement == PolicyEnforcement::Blocking => {
            Some(format!("Tool execution blocked: no policy decision ({e})"))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no policy decision; monitoring mode lets the call run");
            None
        }
    }
}

/// The tool name of a delegation to `name`.
fn delegate_name(name: &str) -> String {
    format!("delegate_to_{}", tool_name(name)).chars().take(64).collect()
}

/// The tools `skills` give a loop of the run, with those of the run's MCP servers.
async fn skill_tools(
    cp: &ControlPlane,
    claim: &Claim,
    emit: &Emitter,
    settings: &ToolSettings,
    skills: &[ResolvedSkill],
) -> Vec<Tool> {
    let place = RunPlace::of(cp, claim);
    let mut out = tools(skills, &place, settings);
    let note = |event_type: &str, data: Value| emit.emit(event_type, data);
    // Starting a server (a command on this host) or reaching one is decided by the policies
    // first, like a tool call: its command or URL, not its env or headers (they hold secrets).
    let mut servers = Vec::new();
    for (name, config) in mcp_servers(&claim.environment.mcp_servers, skills) {
        let what = json!({"server": name, "type": config["type"], "command": config["command"],
            "args": config["args"], "url": config["url"]});
        match policy_refusal(cp, claim, emit, "mcp_server", &what, "high", &|d| d).await {
            Some(refusal) => note("mcp_server_unavailable", mcp::unavailable(name, &refusal)),
            None => servers.push((name, config)),
        }
    }
    add_mcp_tools(&mut out, servers, &place, settings, &note).await;
    out
}

/// The loop of a team's member `index`: its own system prompt, model (the team's when it has
/// none) and skills.
async fn member_agent<'a>(
    cp: &'a ControlPlane,
    claim: &'a Claim,
    emit: &'a Emitter,
    settings: &'a ToolSettings,
    index: usize,
) -> Result<Agent<'a>, RunError> {
    let member = &claim.members[index];
    let model = member
        .model_id
        .as_ref()
        .and_then(|m| claim.member_models.get(m))
        .or(claim.model.as_ref());
    let skills = claim
        .member_skills
        .get(&member.id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let llm = &member.llm_config;
    Ok(Agent {
        cp,
        settings,
        claim,
        emit,
        client: model_client(model)?,
        model,
        system: member.system_prompt.clone(),
        tools: skill_tools(cp, claim, emit, settings, skills).await,
        temperature: llm["temperature"].as_f64(),
        max_tokens: llm["max_tokens"].as_u64().map(|n| n as u32),
        max_turns: llm["max_turns"].as_u64().unwrap_or(20).clamp(1, 200),
        member: Some((member.id, member.name.clone())),
    })
}

/// Runs the agent or team of `claim` to its answer; the answer and the usage of every model
/// call (members' included).
pub async fn run(
    cp: &ControlPlane,
    claim: &Claim,
    emit: &Emitter,
    settings: &ToolSettings,
) -> Result<(String, Usage), RunError> {
    let llm = claim.model.as_ref().map(|m| m.llm_config.clone()).unwrap_or_default();
    let mut agent = Agent {
        cp,
        settings,
        claim,
        emit,
        client: model_client(claim.model.as_ref())?,
        model: claim.model.as_ref(),
        system: claim.system_prompt.clone(),
        tools: skill_tools(cp, claim, emit, settings, &claim.skills).await,
        temperature: llm["temperature"].as_f64(),
        max_tokens: llm["max_tokens"].as_u64().map(|n| n as u32),
        max_turns: llm["max_turns"].as_u64().unwrap_or(20).clamp(1, 200),
        member: None,
    };
    if let Some(team) = &claim.team {
        // The coordinator: the team's instructions, its members offered as tools.
        let mut roster = String::from("You coordinate a team. Delegate work to its members with their tools:");
        for (i, m) in claim.members.iter().enumerate() {
            let about = m.description.clone().unwrap_or_else(|| "a team member".into());
            roster.push_str(&format!("\n- {} ({about})", delegate_name(&m.name)));
            agent.tools.push(Tool {
                spec: ToolSpec {
                    name: delegate_name(&m.name),
                    description: format!("Delegate a task to {}: {about}", m.name),
                    parameters: json!({
                        "type": "object",
                        "properties": {"task": {"type": "string", "description": "What the member should do"}},
                        "required": ["task"],
                    }),
                },
                kind: ToolKind::Delegate(i),
            });
        }
        agent.system = Some(match &agent.system {
            Some(instructions) => format!("{instructions}\n\n{roster}"),
            None => roster,
        });
        agent.max_turns = team.configuration["max_rounds"].as_u64().unwrap_or(10).clamp(1, 100);
    }
    emit.emit(
        "run_started",
        json!({"model": agent.client.config().model, "attempt": claim.execution.attempt}),
    );
    agent.answer(conversation(claim)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(provider: &str, base_url: Option<&str>, secret: Option<&str>) -> RunModel {
        RunModel {
            id: Uuid::nil(),
            value: format!("{provider}/m"),
            provider: provider.into(),
            provider_model: "m".into(),
            base_url: base_url.map(str::to_owned),
            api_key: None,
            api_key_secret: secret.map(str::to_owned),
            llm_config: json!({}),
            pricing: None,
        }
    }

    #[test]
    fn a_missing_key_says_which_model_needs_which_key() {
        // SAFETY (edition 2024 makes env writes unsafe): this test owns these variables.
        unsafe {
            std::env::remove_var("ANTHROPIC_API_KEY");
            std::env::remove_var("ANTHROPIC_BASE_URL");
        }
        let err = model_client(Some(&model("anthropic", None, Some("ANTHROPIC_API_KEY"))))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "model anthropic/m needs an API key: a secret named ANTHROPIC_API_KEY, or ANTHROPIC_API_KEY on the worker host"
        );
        // A local server needs none.
        assert!(model_client(Some(&model("ollama", Some("http://127.0.0.1:11434/v1"), None))).is_ok());
        assert!(matches!(model_client(None), Err(RunError::Fatal(m)) if m.contains("no model")));
    }

    #[test]
    fn a_refused_key_needs_an_operator_and_an_outage_another_attempt() {
        let refused = llm_error(cp_llm::LlmError::Auth("invalid x-api-key".into()));
        assert!(
            matches!(&refused, RunError::NeedsOperator(FailureKind::ProviderAuthRefused, m) if m.contains("invalid x-api-key")),
            "{refused:?}"
        );
        assert!(matches!(
            llm_error(cp_llm::LlmError::Unavailable("503".into())),
            RunError::Retryable(_)
        ));
        assert!(matches!(
            llm_error(cp_llm::LlmError::Request("400".into())),
            RunError::Fatal(_)
        ));
    }
}
