//! A run's skills as the tools the model may call: each skill type gives the tools its
//! definition lists (`cp_types::skill::tools_of`, the table `GET /skills/definitions` shows),
//! as its configuration's flags allow.

use std::collections::BTreeMap;
use std::time::Duration;

use cp_llm::ToolSpec;
use cp_types::execution::Claim;
use cp_types::skill::{ResolvedSkill, SKILL_NAMED, SkillType, tools_of};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::ToolSettings;
use crate::client::ControlPlane;
use crate::diagram::Diagrams;
use crate::docker;
use crate::files::Files;
use crate::generate::{self, Generator};
use crate::http::Http;
use crate::knowledge::{self, Knowledge};
use crate::mcp::{self, McpTool};
use crate::python::{CustomClass, Python, RunPython};
use crate::run_workflow::RunWorkflow;
use crate::shell::Shell;

/// A tool the model may call, and what runs it.
pub(crate) struct Tool {
    pub spec: ToolSpec,
    pub kind: ToolKind,
}

pub(crate) enum ToolKind {
    Shell(Shell),
    Files(Files),
    Http(Http),
    Python(RunPython),
    Custom(CustomClass),
    Generate(Generator, generate::Kind),
    Diagram(Diagrams),
    Workflow(RunWorkflow),
    Knowledge(Knowledge),
    Mcp(McpTool),
    /// For the run of this execution.
    Docker(docker::Op, Uuid),
    /// Waits at most this long.
    Sleep(Duration),
    /// A team member, by its position in the claim's members.
    Delegate(usize),
}

/// Reports an event of the run from inside a tool (a generated file, a diagram).
pub(crate) type Note<'a> = &'a (dyn Fn(&str, Value) + Sync);

impl ToolKind {
    /// How dangerous a call looks, for the policy input (the reference's scale).
    pub fn risk(&self, args: &Value) -> &'static str {
        match self {
            ToolKind::Shell(_) => {
                let command = args["command"].as_str().unwrap_or_default();
                let critical = ["rm -rf", "mkfs", "dd if=", "> /dev/", "format "];
                if critical.iter().any(|c| command.contains(c)) {
                    "critical"
                } else {
                    "high"
                }
            }
            ToolKind::Python(_) | ToolKind::Docker(..) => "high",
            ToolKind::Files(_) if args["operation"] == "save_file" => "medium",
            ToolKind::Files(_) => "low",
            ToolKind::Http(_)
            | ToolKind::Custom(_)
            | ToolKind::Generate(..)
            | ToolKind::Workflow(_)
            | ToolKind::Mcp(_) => "medium",
            ToolKind::Diagram(_) | ToolKind::Sleep(_) | ToolKind::Delegate(_) | ToolKind::Knowledge(_) => "low",
        }
    }

    /// Runs the call; its answer for the model and whether it failed.
    pub async fn run(&self, args: &Value, note: Note<'_>) -> (String, bool) {
        match self {
            ToolKind::Shell(shell) => shell.run(args["command"].as_str().unwrap_or_default()).await,
            ToolKind::Files(files) => files.run(args).await,
            ToolKind::Http(http) => http.run(args).await,
            ToolKind::Python(python) => python.run(args).await,
            ToolKind::Custom(custom) => custom.run(args).await,
            ToolKind::Generate(generator, kind) => match generator.run(*kind, args).await {
                Ok((answer, file)) => {
                    note("file_generated", json!({ "files": [file] }));
                    (answer, false)
                }
                Err(e) => (e, true),
            },
            ToolKind::Diagram(diagrams) => match diagrams.run(args) {
                Ok((answer, diagram)) => {
                    note("diagram", diagram);
                    (answer, false)
                }
                Err(e) => (e, true),
            },
            ToolKind::Workflow(workflow) => workflow.run(args).await,
            ToolKind::Knowledge(tool) => tool.run(args).await,
            ToolKind::Mcp(tool) => tool.run(args).await,
            ToolKind::Docker(op, execution) => docker::run(*op, args, *execution).await,
            ToolKind::Sleep(max) => sleep(*max, args).await,
            ToolKind::Delegate(_) => ("delegations are run by the agent loop".into(), true),
        }
    }
}

/// Waits the seconds asked, at most `max`; a cancelled run drops the wait at once.
async fn sleep(max: Duration, args: &Value) -> (String, bool) {
    let Some(asked) = args["seconds"].as_f64().filter(|s| s.is_finite() && *s >= 0.0) else {
        return ("`seconds` must be a number, 0 or more".into(), true);
    };
    let waited = asked.min(max.as_secs_f64());
    tokio::time::sleep(Duration::from_secs_f64(waited)).await;
    if waited < asked {
        let answer = format!("slept {waited} s, the most this skill allows ({asked} s were asked)");
        return (answer, false);
    }
    (format!("slept {asked} s"), false)
}

/// A name the providers accept for a tool: letters, digits, `-` and `_`, at most 64.
pub(crate) fn tool_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .take(64)
        .collect()
}

/// Where a run's tools work: its environment's working directory and variables, and the
/// control plane they may call for the run.
pub(crate) struct RunPlace {
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub cp: ControlPlane,
    pub execution: Uuid,
}

impl RunPlace {
    pub fn of(cp: &ControlPlane, claim: &Claim) -> RunPlace {
        RunPlace {
            working_dir: claim.environment.working_dir.clone(),
            env: claim.env_vars.clone(),
            cp: cp.clone(),
            execution: claim.execution.id,
        }
    }
}

/// The tools `skills` give the model. A name taken by an earlier skill's tool is prefixed
/// with the skill's name.
pub(crate) fn tools(skills: &[ResolvedSkill], run: &RunPlace, settings: &ToolSettings) -> Vec<Tool> {
    let mut out: Vec<Tool> = Vec::new();
    for skill in skills.iter().filter(|s| s.enabled) {
        let config = &skill.configuration;
        for doc in tools_of(skill.skill_type) {
            // Stored configurations carry every flag (defaults are filled in at create).
            if doc
                .enabled_by
                .is_some_and(|flag| !config[flag].as_bool().unwrap_or(false))
            {
                continue;
            }
            let Some((kind, parameters)) = kind_of(skill, doc.name, run, settings) else {
                continue;
            };
            let own = doc.name == SKILL_NAMED;
            let mut name = if own {
                tool_name(&skill.name)
            } else {
                doc.name.to_string()
            };
            if out.iter().any(|t| t.spec.name == name) {
                name = tool_name(&format!("{}_{name}", skill.name));
            }
            let custom = config["custom_config"]["description"].as_str();
            let description = match (skill.description.as_deref().or(custom), own) {
                (Some(d), true) => d.to_string(),
                (Some(d), false) => format!("{} ({d})", doc.description),
                (None, _) => doc.description.to_string(),
            };
            out.push(Tool {
                spec: ToolSpec {
                    name,
                    description,
                    parameters,
                },
                kind,
            });
        }
    }
    out
}

/// The MCP servers a loop uses, by name: the execution environment's `mcp_servers`, then its
/// `mcp` skills.
pub(crate) fn mcp_servers<'a>(
    servers: &'a Map<String, Value>,
    skills: &'a [ResolvedSkill],
) -> Vec<(&'a str, &'a Value)> {
    let skills = skills
        .iter()
        .filter(|s| s.enabled && s.skill_type == SkillType::Mcp)
        .map(|s| (s.name.as_str(), &s.configuration));
    servers
        .iter()
        .map(|(name, config)| (name.as_str(), config))
        .chain(skills)
        .collect()
}

/// Adds the tools of `servers`, connected at once, to `out` (a name `out` already has is
/// not taken twice). A server that cannot be used is reported through `note` as
/// `mcp_server_unavailable` and the run goes on without it.
pub(crate) async fn add_mcp_tools(
    out: &mut Vec<Tool>,
    servers: Vec<(&str, &Value)>,
    run: &RunPlace,
    settings: &ToolSettings,
    note: Note<'_>,
) {
    let place = mcp::Place {
        working_dir: run.working_dir.as_deref(),
        env: &run.env,
        sandbox: &settings.sandbox,
        allow_private_http: settings.allow_private_http,
    };
    let connecting = servers.into_iter().map(|(name, config)| {
        let place = &place;
        async move { (name, mcp::connect(name, config, place).await) }
    });
    for (name, connected) in futures::future::join_all(connecting).await {
        match connected {
            Ok(tools) => {
                for (spec, tool) in tools {
                    if !out.iter().any(|t| t.spec.name == spec.name) {
                        out.push(Tool {
                            spec,
                            kind: ToolKind::Mcp(tool),
                        });
                    }
                }
            }
            Err(error) => note("mcp_server_unavailable", mcp::unavailable(name, &error)),
        }
    }
}

/// What runs the tool `tool` of `skill`, and the JSON Schema of its arguments; `None` for a
/// type this worker cannot run yet.
fn kind_of(skill: &ResolvedSkill, tool: &str, run: &RunPlace, settings: &ToolSettings) -> Option<(ToolKind, Value)> {
    let config = &skill.configuration;
    let working_dir = run.working_dir.clone();
    let python = || Python {
        timeout: Duration::from_secs(config["timeout"].as_u64().unwrap_or(30).clamp(1, 3600)),
        working_dir: working_dir.clone(),
        env: run.env.clone(),
        sandbox: settings.sandbox.clone(),
    };
    Some(match skill.skill_type {
        SkillType::Shell => (
            ToolKind::Shell(Shell::from_config(
                config,
                run.env.clone(),
                working_dir.clone(),
                settings.sandbox.clone(),
            )),
            json!({
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The command line to run with sh -c"}},
                "required": ["command"],
            }),
        ),
        SkillType::FileSystem => {
            let files = Files::from_config(config, working_dir.as_deref());
            let parameters = files.parameters();
            (ToolKind::Files(files), parameters)
        }
        SkillType::Http => {
            let http = Http::from_config(config, settings.allow_private_http);
            let parameters = http.parameters();
            (ToolKind::Http(http), parameters)
        }
        SkillType::Python => (
            ToolKind::Python(RunPython::from_config(config, python())),
            RunPython::parameters(),
        ),
        SkillType::Custom => {
            let custom = CustomClass::from_config(config, python());
            let parameters = custom.parameters();
            (ToolKind::Custom(custom), parameters)
        }
        SkillType::FileGeneration => {
            let kind = generate::Kind::of_tool(tool)?;
            let own = std::env::temp_dir()
                .join("kubiya-cp-files")
                .join(run.execution.to_string());
            let generator = Generator::from_config(config, working_dir.as_deref(), own);
            (ToolKind::Generate(generator, kind), kind.parameters())
        }
        SkillType::DataVisualization => {
            let diagrams = Diagrams::from_config(config);
            let parameters = diagrams.parameters();
            (ToolKind::Diagram(diagrams), parameters)
        }
        SkillType::Sleep => {
            let max = Duration::from_secs(config["max_sleep_seconds"].as_u64().unwrap_or(300));
            let parameters = json!({
                "type": "object",
                "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": max.as_secs()}},
                "required": ["seconds"],
            });
            (ToolKind::Sleep(max), parameters)
        }
        SkillType::WorkflowExecutor => {
            let workflow = RunWorkflow::from_config(config, run.cp.clone(), run.execution);
            let parameters = workflow.parameters();
            (ToolKind::Workflow(workflow), parameters)
        }
        SkillType::Knowledge => {
            let op = knowledge::Op::of_tool(tool)?;
            let tool = Knowledge {
                cp: run.cp.clone(),
                execution: run.execution,
                op,
            };
            (ToolKind::Knowledge(tool), op.parameters())
        }
        // Connected when the run starts: see `mcp_tools`.
        SkillType::Mcp => return None,
        SkillType::Docker => {
            let op = docker::Op::of_tool(tool)?;
            (ToolKind::Docker(op, run.execution), op.parameters())
        }
    })
}

#[cfg(test)]
mod tests {
    use cp_types::skill::{SkillEntityType, validate_configuration};

    use super::*;

    fn skill(name: &str, skill_type: SkillType, config: Value) -> ResolvedSkill {
        ResolvedSkill {
            id: Uuid::now_v7(),
            name: name.into(),
            skill_type,
            description: None,
            icon: None,
            enabled: true,
            configuration: validate_configuration(skill_type, &config).unwrap(),
            source: SkillEntityType::Agent,
            source_id: Uuid::nil(),
            inherited: false,
        }
    }

    fn names(skills: &[ResolvedSkill]) -> Vec<String> {
        let run = RunPlace {
            working_dir: None,
            env: BTreeMap::new(),
            cp: ControlPlane::new("http://127.0.0.1:9", "k"),
            execution: Uuid::nil(),
        };
        tools(skills, &run, &ToolSettings::default())
            .into_iter()
            .map(|t| t.spec.name)
            .collect()
    }

    #[test]
    fn flags_choose_the_tools_and_names_do_not_collide() {
        let skills = [
            skill("my shell", SkillType::Shell, json!({})),
            skill(
                "out",
                SkillType::FileGeneration,
                json!({"enable_pdf_generation": false}),
            ),
            skill("py", SkillType::Python, json!({})),
            skill("py2", SkillType::Python, json!({})),
            skill("off", SkillType::Python, json!({"enable_code_execution": false})),
            skill("nap", SkillType::Sleep, json!({})),
            skill("charts", SkillType::DataVisualization, json!({})),
            skill("greet", SkillType::Custom, json!({"custom_class": "m:Greeter"})),
            skill("flows", SkillType::WorkflowExecutor, json!({})),
            skill("boxes", SkillType::Docker, json!({"enable_volume_management": true})),
        ];
        assert_eq!(
            names(&skills),
            [
                "my_shell",
                "generate_json",
                "generate_csv",
                "generate_text",
                "run_python",
                "py2_run_python",
                "sleep",
                "create_diagram",
                "greet",
                "run_workflow",
                "docker_run_container",
                "docker_list_containers",
                "docker_container_logs",
                "docker_stop_container",
                "docker_list_volumes",
                "docker_create_volume",
                "docker_remove_volume"
            ]
        );
    }

    #[tokio::test]
    async fn sleep_waits_at_most_its_maximum() {
        let max = Duration::from_millis(20);
        let started = std::time::Instant::now();
        let (answer, failed) = sleep(max, &json!({"seconds": 30})).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            (answer.as_str(), failed),
            ("slept 0.02 s, the most this skill allows (30 s were asked)", false)
        );
        assert_eq!(
            sleep(max, &json!({"seconds": 0})).await,
            ("slept 0 s".to_string(), false)
        );
        assert!(sleep(max, &json!({"seconds": -1})).await.1);
        assert!(sleep(max, &json!({"seconds": "5"})).await.1);
    }
}
