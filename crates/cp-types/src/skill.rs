//! Skills (API §3, Skill row): what tools an agent gets, their per-type configuration, the
//! validation of that configuration, associations to agents, teams and environments, and the
//! resolution of the layers an agent or team inherits.
//!
//! Everything here is pure so the server, the worker and the execution engine share one
//! definition of "valid configuration", one shell command checker and one merge rule.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::common::nullable;
use crate::validate::Issues;
use crate::{FieldIssue, wire_enum};

wire_enum! {
    /// The kinds of skill a worker knows how to turn into tools.
    SkillType {
        Shell = "shell",
        FileSystem = "file_system",
        Http = "http",
        Python = "python",
        Docker = "docker",
        WorkflowExecutor = "workflow_executor",
        FileGeneration = "file_generation",
        DataVisualization = "data_visualization",
        Sleep = "sleep",
        Custom = "custom",
        Mcp = "mcp",
        Knowledge = "knowledge",
    }
}

wire_enum! {
    /// The JSON type of one configuration key.
    ConfigFieldType {
        String = "string",
        Integer = "integer",
        Boolean = "boolean",
        StringList = "string_list",
        Object = "object",
    }
}

wire_enum! {
    /// What a skill can be attached to; also the `source` layer of a resolved skill.
    SkillEntityType { Environment = "environment", Team = "team", Agent = "agent" }
}

impl SkillEntityType {
    /// Parses the `{entity_type}` of association paths and bodies: singular or plural.
    pub fn parse_loose(s: &str) -> Option<SkillEntityType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "agent" | "agents" => Some(Self::Agent),
            "team" | "teams" => Some(Self::Team),
            "environment" | "environments" => Some(Self::Environment),
            _ => None,
        }
    }
}

/// One entity that skills are attached to or resolved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityRef {
    pub kind: SkillEntityType,
    pub id: Uuid,
}

// ---------------------------------------------------------------------------------------------
// Definitions: one static table per type, the source of both the documents and the validator.

/// A default value, written so the tables can be `const`.
#[derive(Debug, Clone, Copy)]
enum DefaultValue {
    None,
    Bool(bool),
    Int(i64),
    Str(&'static str),
    List(&'static [&'static str]),
    EmptyObject,
}

impl DefaultValue {
    fn to_value(self) -> Option<Value> {
        match self {
            DefaultValue::None => None,
            DefaultValue::Bool(b) => Some(Value::Bool(b)),
            DefaultValue::Int(i) => Some(Value::from(i)),
            DefaultValue::Str(s) => Some(Value::from(s)),
            DefaultValue::List(items) => Some(Value::from(items.to_vec())),
            DefaultValue::EmptyObject => Some(Value::Object(Map::new())),
        }
    }
}

/// Extra checks on a string or on each item of a string list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Any,
    /// A program name: non-empty, no whitespace (it is compared with a command's first word).
    Command,
    /// `host`, `host:port` or `*.suffix`.
    Host,
    /// A module name such as `os` or `os.path`.
    Module,
    /// JSON text (the workflow definition is stored as a string, as the reference does).
    JsonText,
    /// Not empty after trimming.
    NonEmpty,
    /// A Python class as `module.path:ClassName`.
    PythonClass,
}

#[derive(Debug, Clone, Copy)]
struct FieldSpec {
    name: &'static str,
    kind: ConfigFieldType,
    description: &'static str,
    default: DefaultValue,
    required: bool,
    min: Option<i64>,
    max: Option<i64>,
    /// Allowed values of a string, or of each item of a string list (matched case-insensitively).
    choices: &'static [&'static str],
    rule: Rule,
}

const fn field(name: &'static str, kind: ConfigFieldType, description: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        description,
        default: DefaultValue::None,
        required: false,
        min: None,
        max: None,
        choices: &[],
        rule: Rule::Any,
    }
}

const fn string(name: &'static str, description: &'static str) -> FieldSpec {
    field(name, ConfigFieldType::String, description)
}

const fn boolean(name: &'static str, description: &'static str, default: bool) -> FieldSpec {
    let mut f = field(name, ConfigFieldType::Boolean, description);
    f.default = DefaultValue::Bool(default);
    f
}

const fn integer(name: &'static str, description: &'static str, default: i64, min: i64, max: i64) -> FieldSpec {
    let mut f = field(name, ConfigFieldType::Integer, description);
    f.default = DefaultValue::Int(default);
    f.min = Some(min);
    f.max = Some(max);
    f
}

const fn list(
    name: &'static str,
    description: &'static str,
    default: &'static [&'static str],
    rule: Rule,
) -> FieldSpec {
    let mut f = field(name, ConfigFieldType::StringList, description);
    f.default = DefaultValue::List(default);
    f.rule = rule;
    f
}

const fn with_rule(mut f: FieldSpec, rule: Rule) -> FieldSpec {
    f.rule = rule;
    f
}

const fn required(mut f: FieldSpec) -> FieldSpec {
    f.required = true;
    f
}

const HTTP_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

const SHELL_FIELDS: &[FieldSpec] = &[
    list(
        "allowed_commands",
        "Programs a command line may run (each part's first word). Empty: any program not blocked.",
        &[],
        Rule::Command,
    ),
    list(
        "blocked_commands",
        "Programs a command line may never run, whatever the allow list says.",
        &[],
        Rule::Command,
    ),
    integer("timeout", "Seconds before a command is killed.", 30, 1, 600),
    with_rule(
        string(
            "working_directory",
            "Directory commands run in (default: the execution's working directory).",
        ),
        Rule::NonEmpty,
    ),
    with_rule(
        string("shell_binary", "Shell used to run command lines (default: /bin/sh)."),
        Rule::NonEmpty,
    ),
    list(
        "shell_args",
        "Arguments passed to the shell before the command line (default: -c).",
        &[],
        Rule::Any,
    ),
    string(
        "usage_guidelines",
        "Extra instructions for the model on how to use the shell.",
    ),
    string("environment_context", "A description of the host given to the model."),
];

const FILE_SYSTEM_FIELDS: &[FieldSpec] = &[
    with_rule(
        string(
            "base_dir",
            "Directory the tools are confined to (default: the execution's working directory).",
        ),
        Rule::NonEmpty,
    ),
    boolean("enable_read_file", "Allow reading files.", true),
    boolean("enable_save_file", "Allow creating and overwriting files.", true),
    boolean("enable_list_files", "Allow listing directories.", true),
    boolean(
        "enable_search_files",
        "Allow searching files by name and content.",
        true,
    ),
];

const HTTP_FIELDS: &[FieldSpec] = &[
    list(
        "allowed_hosts",
        "Hosts requests may go to: `host`, `host:port` or `*.suffix`. Empty: any host.",
        &[],
        Rule::Host,
    ),
    integer("timeout", "Seconds before a request is abandoned.", 30, 1, 300),
    {
        let mut f = list(
            "allowed_methods",
            "HTTP methods the tool may use. Absent: all of them.",
            &[],
            Rule::Any,
        );
        f.default = DefaultValue::None;
        f.choices = HTTP_METHODS;
        f
    },
];

const PYTHON_FIELDS: &[FieldSpec] = &[
    boolean("enable_code_execution", "Allow running Python code.", true),
    list(
        "allowed_imports",
        "Modules code may import. Empty: any module not blocked.",
        &[],
        Rule::Module,
    ),
    list(
        "blocked_imports",
        "Modules code may never import.",
        &["os", "subprocess", "sys", "socket", "shutil"],
        Rule::Module,
    ),
    integer("timeout", "Seconds before a run is killed.", 30, 1, 600),
];

const DOCKER_FIELDS: &[FieldSpec] = &[
    boolean(
        "enable_container_management",
        "Allow running, listing and stopping containers.",
        true,
    ),
    boolean(
        "enable_image_management",
        "Allow pulling, building and removing images.",
        false,
    ),
    boolean(
        "enable_volume_management",
        "Allow creating and removing volumes.",
        false,
    ),
    boolean(
        "enable_network_management",
        "Allow creating and removing networks.",
        false,
    ),
];

const WORKFLOW_FIELDS: &[FieldSpec] = &[
    {
        let mut f = string(
            "workflow_type",
            "How the workflow is written: `json` (`python_dsl` is not supported).",
        );
        f.default = DefaultValue::Str("json");
        f.choices = &["json", "python_dsl"];
        f
    },
    with_rule(
        string(
            "workflow",
            "The id or name of one of the organization's workflows the tool runs. Neither this nor \
             workflow_definition: the model names the workflow.",
        ),
        Rule::NonEmpty,
    ),
    with_rule(
        string(
            "workflow_definition",
            "The workflow as JSON text (when workflow_type is json).",
        ),
        Rule::JsonText,
    ),
    string(
        "python_dsl_code",
        "The workflow as Python DSL code (when workflow_type is python_dsl).",
    ),
    boolean("validation_enabled", "Validate the workflow before running it.", true),
    with_rule(
        string("default_runner", "Runner the workflow's steps run on by default."),
        Rule::NonEmpty,
    ),
    integer(
        "timeout",
        "Seconds the tool waits for the workflow run to end (the run itself goes on).",
        3600,
        1,
        86_400,
    ),
];

const FILE_GENERATION_FIELDS: &[FieldSpec] = &[
    boolean("enable_json_generation", "Allow writing JSON files.", true),
    boolean("enable_csv_generation", "Allow writing CSV files.", true),
    boolean("enable_pdf_generation", "Allow writing PDF files.", true),
    boolean("enable_txt_generation", "Allow writing text files.", true),
    with_rule(
        string(
            "output_directory",
            "Directory generated files are written to (default: the working directory).",
        ),
        Rule::NonEmpty,
    ),
];

const DATA_VISUALIZATION_FIELDS: &[FieldSpec] = &[
    boolean("enable_flowchart", "Allow flowcharts.", true),
    boolean("enable_sequence_diagram", "Allow sequence diagrams.", true),
    boolean("enable_class_diagram", "Allow class diagrams.", true),
    boolean("enable_er_diagram", "Allow entity-relationship diagrams.", true),
    boolean("enable_gantt_chart", "Allow Gantt charts.", true),
    boolean("enable_pie_chart", "Allow pie charts.", true),
    boolean("enable_state_diagram", "Allow state diagrams.", true),
    boolean("enable_git_graph", "Allow git graphs.", true),
    boolean("enable_user_journey", "Allow user journeys.", true),
    boolean("enable_quadrant_chart", "Allow quadrant charts.", true),
    integer(
        "max_diagram_size",
        "Largest diagram source accepted, in characters.",
        50_000,
        100,
        1_000_000,
    ),
];

const SLEEP_FIELDS: &[FieldSpec] = &[integer(
    "max_sleep_seconds",
    "Longest pause the tool may take, in seconds.",
    300,
    1,
    3600,
)];

const KNOWLEDGE_FIELDS: &[FieldSpec] = &[
    boolean(
        "enable_search",
        "Give the search_knowledge tool (full-text search of the organization's knowledge items).",
        true,
    ),
    boolean(
        "enable_graph_query",
        "Give the query_graph tool (read-only Cypher over the context graph).",
        true,
    ),
    integer("max_results", "Knowledge items one search answers at most.", 5, 1, 20),
    list(
        "tags",
        "Search only the items carrying every one of these tags.",
        &[],
        Rule::NonEmpty,
    ),
];

const CUSTOM_FIELDS: &[FieldSpec] = &[
    required(with_rule(
        string(
            "custom_class",
            "The Python class the worker runs, as `module:Class` (importable on the worker host): \
             `Class(**custom_config.init).run(**arguments)` answers the call.",
        ),
        Rule::PythonClass,
    )),
    {
        let mut f = field(
            "custom_config",
            ConfigFieldType::Object,
            "Settings: `parameters` (the JSON Schema of the tool's arguments), `description`, \
             `init` (keyword arguments of the class), `python_path` (directories to import from).",
        );
        f.default = DefaultValue::EmptyObject;
        f
    },
];

const MCP_FIELDS: &[FieldSpec] = &[
    {
        let mut f = string(
            "type",
            "How the server is reached: `stdio` (a command the worker starts), `http` (streamable HTTP) or \
             `sse` (also connected as streamable HTTP).",
        );
        f.default = DefaultValue::Str("stdio");
        f.choices = &["stdio", "http", "sse"];
        f
    },
    with_rule(
        string("command", "stdio: the program the worker starts (in the tool sandbox)."),
        Rule::NonEmpty,
    ),
    list("args", "stdio: its arguments.", &[], Rule::Any),
    {
        let mut f = field(
            "env",
            ConfigFieldType::Object,
            "stdio: environment variables (strings); `${NAME}` is replaced by the run's variable NAME.",
        );
        f.default = DefaultValue::EmptyObject;
        f
    },
    with_rule(string("url", "http and sse: the server's URL."), Rule::NonEmpty),
    {
        let mut f = field(
            "headers",
            ConfigFieldType::Object,
            "http and sse: request headers (strings); `${NAME}` is replaced by the run's variable NAME.",
        );
        f.default = DefaultValue::EmptyObject;
        f
    },
    list(
        "allowed_tools",
        "The server's tools the agent gets. Empty: all of them.",
        &[],
        Rule::NonEmpty,
    ),
    integer("timeout", "Seconds a tool call may take.", 60, 1, 600),
];

struct TypeSpec {
    name: &'static str,
    description: &'static str,
    icon: &'static str,
    category: &'static str,
    fields: &'static [FieldSpec],
    tools: &'static [ToolDoc],
}

/// A tool a skill type gives the model (one table for the definitions and the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolDoc {
    /// The tool's name; `{skill}` stands for the skill's own name.
    pub name: &'static str,
    pub description: &'static str,
    /// The boolean configuration key that must be true for the tool to be offered.
    pub enabled_by: Option<&'static str>,
}

/// The name that stands for the skill's own name in `ToolDoc::name`.
pub const SKILL_NAMED: &str = "{skill}";

const fn tool(name: &'static str, description: &'static str, enabled_by: Option<&'static str>) -> ToolDoc {
    ToolDoc {
        name,
        description,
        enabled_by,
    }
}

const CONTAINERS: Option<&str> = Some("enable_container_management");
const IMAGES: Option<&str> = Some("enable_image_management");
const VOLUMES: Option<&str> = Some("enable_volume_management");
const NETWORKS: Option<&str> = Some("enable_network_management");

const DOCKER_TOOLS: &[ToolDoc] = &[
    tool(
        "docker_run_container",
        "Runs a container from an image; answers its id (and its output when it is waited for).",
        CONTAINERS,
    ),
    tool(
        "docker_list_containers",
        "Lists containers with their image, state and names.",
        CONTAINERS,
    ),
    tool(
        "docker_container_logs",
        "The last lines a container printed.",
        CONTAINERS,
    ),
    tool(
        "docker_stop_container",
        "Stops a container (and removes it when asked).",
        CONTAINERS,
    ),
    tool("docker_list_images", "Lists images with their tags and sizes.", IMAGES),
    tool("docker_pull_image", "Pulls an image by reference.", IMAGES),
    tool("docker_remove_image", "Removes an image.", IMAGES),
    tool("docker_list_volumes", "Lists volumes.", VOLUMES),
    tool("docker_create_volume", "Creates a volume.", VOLUMES),
    tool("docker_remove_volume", "Removes a volume.", VOLUMES),
    tool("docker_list_networks", "Lists networks.", NETWORKS),
    tool("docker_create_network", "Creates a network.", NETWORKS),
    tool("docker_remove_network", "Removes a network.", NETWORKS),
];

const SHELL_TOOLS: &[ToolDoc] = &[tool(
    SKILL_NAMED,
    "Runs a command line with sh -c and answers its output.",
    None,
)];
const FILE_SYSTEM_TOOLS: &[ToolDoc] = &[tool(
    SKILL_NAMED,
    "Reads, saves, lists and searches files under the base directory (`operation`).",
    None,
)];
const HTTP_TOOLS: &[ToolDoc] = &[tool(
    SKILL_NAMED,
    "Sends an HTTP request to an allowed host and answers the response.",
    None,
)];
const PYTHON_TOOLS: &[ToolDoc] = &[tool(
    "run_python",
    "Runs Python code (`code`) and answers what it printed.",
    Some("enable_code_execution"),
)];
const WORKFLOW_TOOLS: &[ToolDoc] = &[tool(
    "run_workflow",
    "Runs a workflow of the organization with `inputs`, waits for it and answers its outputs.",
    None,
)];
const DIAGRAM_TOOLS: &[ToolDoc] = &[tool(
    "create_diagram",
    "Shows a Mermaid diagram (`source`) to the user.",
    None,
)];
const SLEEP_TOOLS: &[ToolDoc] = &[tool(
    "sleep",
    "Waits `seconds` (up to the skill's max_sleep_seconds).",
    None,
)];
const KNOWLEDGE_TOOLS: &[ToolDoc] = &[
    tool(
        "search_knowledge",
        "Searches the organization's knowledge (runbooks, docs, notes) for `query` and answers the best matches.",
        Some("enable_search"),
    ),
    tool(
        "query_graph",
        "Runs a read-only Cypher query (`cypher`) over the context graph of services, resources, owners and the \
         control plane's own agents and teams, and answers the rows.",
        Some("enable_graph_query"),
    ),
];
const CUSTOM_TOOLS: &[ToolDoc] = &[tool(
    SKILL_NAMED,
    "Runs the skill's Python class with the arguments.",
    None,
)];

const MCP_TOOLS: &[ToolDoc] = &[tool(
    "{skill}_{tool}",
    "Each tool the server lists (as allowed_tools allows), named after the skill and the tool.",
    None,
)];
const FILE_GENERATION_TOOLS: &[ToolDoc] = &[
    tool(
        "generate_json",
        "Writes `data` as a JSON file named `filename`.",
        Some("enable_json_generation"),
    ),
    tool(
        "generate_csv",
        "Writes a CSV file named `filename` from `content` (CSV text) or `rows` (a list of lists or of objects).",
        Some("enable_csv_generation"),
    ),
    tool(
        "generate_text",
        "Writes `content` as a text file named `filename`.",
        Some("enable_txt_generation"),
    ),
    tool(
        "generate_pdf",
        "Writes `content` (plain text) as a PDF document named `filename`, with an optional `title`.",
        Some("enable_pdf_generation"),
    ),
];

fn spec(ty: SkillType) -> &'static TypeSpec {
    match ty {
        SkillType::Shell => &TypeSpec {
            name: "Shell",
            description: "Run shell commands on the worker host, limited by allow and block lists.",
            icon: "Terminal",
            category: "system",
            fields: SHELL_FIELDS,
            tools: SHELL_TOOLS,
        },
        SkillType::FileSystem => &TypeSpec {
            name: "File System",
            description: "Read, write, list and search files under a base directory.",
            icon: "FolderOpen",
            category: "files",
            fields: FILE_SYSTEM_FIELDS,
            tools: FILE_SYSTEM_TOOLS,
        },
        SkillType::Http => &TypeSpec {
            name: "HTTP",
            description: "Make HTTP requests to an allowed set of hosts.",
            icon: "Globe",
            category: "network",
            fields: HTTP_FIELDS,
            tools: HTTP_TOOLS,
        },
        SkillType::Python => &TypeSpec {
            name: "Python",
            description: "Run Python code with import restrictions.",
            icon: "Code",
            category: "code",
            fields: PYTHON_FIELDS,
            tools: PYTHON_TOOLS,
        },
        SkillType::Docker => &TypeSpec {
            name: "Docker",
            description: "Manage containers, images, volumes and networks through the Docker engine.",
            icon: "Container",
            category: "infrastructure",
            fields: DOCKER_FIELDS,
            tools: DOCKER_TOOLS,
        },
        SkillType::WorkflowExecutor => &TypeSpec {
            name: "Workflow Executor",
            description: "Run a predefined workflow (JSON or Python DSL) as one tool.",
            icon: "Workflow",
            category: "automation",
            fields: WORKFLOW_FIELDS,
            tools: WORKFLOW_TOOLS,
        },
        SkillType::FileGeneration => &TypeSpec {
            name: "File Generation",
            description: "Write JSON, CSV, PDF and text files.",
            icon: "FilePlus",
            category: "files",
            fields: FILE_GENERATION_FIELDS,
            tools: FILE_GENERATION_TOOLS,
        },
        SkillType::DataVisualization => &TypeSpec {
            name: "Data Visualization",
            description: "Draw Mermaid diagrams and charts.",
            icon: "BarChart",
            category: "visualization",
            fields: DATA_VISUALIZATION_FIELDS,
            tools: DIAGRAM_TOOLS,
        },
        SkillType::Sleep => &TypeSpec {
            name: "Sleep",
            description: "Pause for a while (waiting for something outside to happen).",
            icon: "Clock",
            category: "utility",
            fields: SLEEP_FIELDS,
            tools: SLEEP_TOOLS,
        },
        SkillType::Mcp => &TypeSpec {
            name: "MCP Server",
            description: "Give agents the tools of a Model Context Protocol server (stdio or HTTP).",
            icon: "Plug",
            category: "integration",
            fields: MCP_FIELDS,
            tools: MCP_TOOLS,
        },
        SkillType::Knowledge => &TypeSpec {
            name: "Knowledge",
            description: "Search the organization's knowledge and query its context graph.",
            icon: "BookOpen",
            category: "knowledge",
            fields: KNOWLEDGE_FIELDS,
            tools: KNOWLEDGE_TOOLS,
        },
        SkillType::Custom => &TypeSpec {
            name: "Custom",
            description: "A tool implemented by a class the worker loads.",
            icon: "Wrench",
            category: "custom",
            fields: CUSTOM_FIELDS,
            tools: CUSTOM_TOOLS,
        },
    }
}

/// One configuration key of a skill type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigField {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: ConfigFieldType,
    pub description: String,
    /// The value filled in when the key is left out (`null`: none).
    pub default: Option<Value>,
    pub required: bool,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// The allowed values of a string, or of each item of a string list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_values: Option<Vec<String>>,
}

/// What a skill type is and how it is configured (`GET /skills/definitions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillDefinition {
    #[serde(rename = "type")]
    pub skill_type: SkillType,
    pub name: String,
    pub description: String,
    pub icon: String,
    pub category: String,
    pub config_schema: Vec<ConfigField>,
    /// Every key that has a default, with that default.
    #[schema(value_type = Object)]
    pub default_configuration: Value,
    /// The tools a skill of this type gives the model.
    pub tools: Vec<SkillTool>,
}

/// A tool a skill type gives the model, in `GET /skills/definitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillTool {
    /// The tool's name; `{skill}` stands for the skill's own name.
    pub name: String,
    pub description: String,
    /// The configuration flag that turns the tool on (absent: always offered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_by: Option<String>,
}

/// A skill type in short (`GET /skills/types`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillTypeInfo {
    #[serde(rename = "type")]
    pub skill_type: SkillType,
    pub name: String,
    pub description: String,
}

/// The definition of one skill type.
pub fn definition(ty: SkillType) -> SkillDefinition {
    let spec = spec(ty);
    let config_schema = spec
        .fields
        .iter()
        .map(|f| ConfigField {
            name: f.name.to_string(),
            field_type: f.kind,
            description: f.description.to_string(),
            default: f.default.to_value(),
            required: f.required,
            min: f.min,
            max: f.max,
            allowed_values: (!f.choices.is_empty()).then(|| f.choices.iter().map(|c| c.to_string()).collect()),
        })
        .collect();
    SkillDefinition {
        skill_type: ty,
        name: spec.name.to_string(),
        description: spec.description.to_string(),
        icon: spec.icon.to_string(),
        category: spec.category.to_string(),
        config_schema,
        default_configuration: Value::Object(defaults(spec)),
        tools: spec
            .tools
            .iter()
            .map(|t| SkillTool {
                name: t.name.to_string(),
                description: t.description.to_string(),
                enabled_by: t.enabled_by.map(str::to_owned),
            })
            .collect(),
    }
}

/// The tools a skill of type `ty` gives the model.
pub fn tools_of(ty: SkillType) -> &'static [ToolDoc] {
    spec(ty).tools
}

/// Every skill type's definition, in `SkillType::ALL` order.
pub fn definitions() -> Vec<SkillDefinition> {
    SkillType::ALL.iter().map(|t| definition(*t)).collect()
}

/// Every skill type in short, in `SkillType::ALL` order.
pub fn type_infos() -> Vec<SkillTypeInfo> {
    SkillType::ALL
        .iter()
        .map(|t| {
            let spec = spec(*t);
            SkillTypeInfo {
                skill_type: *t,
                name: spec.name.to_string(),
                description: spec.description.to_string(),
            }
        })
        .collect()
}

/// The icon a new skill of this type gets when none is given.
pub fn default_icon(ty: SkillType) -> &'static str {
    spec(ty).icon
}

fn defaults(spec: &TypeSpec) -> Map<String, Value> {
    spec.fields
        .iter()
        .filter_map(|f| f.default.to_value().map(|v| (f.name.to_string(), v)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Validation.

const MAX_LIST_ITEMS: usize = 1000;

/// Validates a skill's whole configuration against its type and answers it normalized: every
/// key with a default is present, `null` values are dropped (as if left out), method names are
/// uppercased. Issues name `configuration.<key>`.
pub fn validate_configuration(ty: SkillType, config: &Value) -> Result<Value, Vec<FieldIssue>> {
    check_configuration(ty, config, "configuration", true)
}

/// Validates a partial configuration (an association's `configuration_override`): the same
/// checks per key, but nothing is required and no default is filled in. Issues name
/// `configuration_override.<key>`.
pub fn validate_override(ty: SkillType, config: &Value) -> Result<Value, Vec<FieldIssue>> {
    check_configuration(ty, config, "configuration_override", false)
}

fn check_configuration(ty: SkillType, config: &Value, prefix: &str, full: bool) -> Result<Value, Vec<FieldIssue>> {
    let mut v = Issues::new();
    let Some(given) = config.as_object() else {
        return Err(vec![FieldIssue::new(prefix, "must be an object")]);
    };
    let spec = spec(ty);
    let mut out = if full { defaults(spec) } else { Map::new() };
    for (key, value) in given {
        let name = format!("{prefix}.{key}");
        let Some(f) = spec.fields.iter().find(|f| f.name == key) else {
            let known: Vec<&str> = spec.fields.iter().map(|f| f.name).collect();
            v.push(
                &name,
                format!("unknown key for a {ty} skill; known keys: {}", known.join(", ")),
            );
            continue;
        };
        if value.is_null() {
            // Clients written for the reference send `None` for keys they leave alone.
            continue;
        }
        if let Some(normalized) = check_value(f, value, &name, &mut v) {
            out.insert(key.clone(), normalized);
        }
    }
    check_type_rules(ty, &out, prefix, full, &mut v);
    if full {
        for f in spec.fields.iter().filter(|f| f.required) {
            v.check(
                out.contains_key(f.name) || given.get(f.name).is_some_and(|v| !v.is_null()),
                &format!("{prefix}.{}", f.name),
                format!("is required for a {ty} skill"),
            );
        }
    }
    v.finish().map(|()| Value::Object(out))
}

/// What a type asks of its keys beyond each one's own check.
fn check_type_rules(ty: SkillType, config: &Map<String, Value>, prefix: &str, full: bool, v: &mut Issues) {
    match ty {
        SkillType::WorkflowExecutor => {
            let dsl = config.get("workflow_type").is_some_and(|t| t == "python_dsl");
            for key in ["workflow_type", "python_dsl_code"] {
                let given = if key == "workflow_type" {
                    dsl
                } else {
                    config.contains_key(key)
                };
                v.check(
                    !given,
                    &format!("{prefix}.{key}"),
                    "Python DSL workflows are not supported: only JSON is (workflow_definition, or workflow \
                     naming one of the organization's workflows)",
                );
            }
        }
        SkillType::Custom => {
            let Some(custom) = config.get("custom_config").and_then(Value::as_object) else {
                return;
            };
            let name = |key: &str| format!("{prefix}.custom_config.{key}");
            if let Some(p) = custom.get("parameters") {
                v.check(
                    p.is_object() && p.get("type").is_none_or(|t| t == "object"),
                    &name("parameters"),
                    "must be a JSON Schema of an object (the tool's arguments)",
                );
            }
            if let Some(init) = custom.get("init") {
                v.check(
                    init.is_object(),
                    &name("init"),
                    "must be an object of keyword arguments",
                );
            }
            if let Some(dirs) = custom.get("python_path") {
                let ok = dirs
                    .as_array()
                    .is_some_and(|d| d.iter().all(|p| p.as_str().is_some_and(|p| p.starts_with('/'))));
                v.check(ok, &name("python_path"), "must be a list of absolute directories");
            }
            if let Some(d) = custom.get("description") {
                v.check(d.is_string(), &name("description"), "must be a string");
            }
        }
        SkillType::Mcp => {
            let stdio = config.get("type").is_none_or(|t| t == "stdio");
            let (needed, needs) = if stdio {
                ("command", "a stdio server")
            } else {
                ("url", "an HTTP server")
            };
            if full {
                v.check(
                    config.contains_key(needed),
                    &format!("{prefix}.{needed}"),
                    format!("is required for {needs}"),
                );
            }
            if let Some(url) = config.get("url").and_then(Value::as_str) {
                v.check(
                    url.starts_with("http://") || url.starts_with("https://"),
                    &format!("{prefix}.url"),
                    "must be an http:// or https:// URL",
                );
            }
            for key in ["env", "headers"] {
                if let Some(Value::Object(o)) = config.get(key) {
                    v.check(
                        o.values().all(Value::is_string),
                        &format!("{prefix}.{key}"),
                        "values must be strings",
                    );
                }
            }
        }
        _ => {}
    }
}

/// Checks one value; answers its normalized form, or `None` after recording the issue.
fn check_value(f: &FieldSpec, value: &Value, name: &str, v: &mut Issues) -> Option<Value> {
    match f.kind {
        ConfigFieldType::Boolean => match value {
            Value::Bool(_) => Some(value.clone()),
            _ => bad(v, name, "must be a boolean"),
        },
        ConfigFieldType::Integer => {
            let Some(n) = value.as_i64() else {
                return bad(v, name, "must be an integer");
            };
            let (min, max) = (f.min.unwrap_or(i64::MIN), f.max.unwrap_or(i64::MAX));
            if n < min || n > max {
                return bad(v, name, format!("must be between {min} and {max}"));
            }
            Some(value.clone())
        }
        ConfigFieldType::String => {
            let Some(s) = value.as_str() else {
                return bad(v, name, "must be a string");
            };
            let s = check_text(f, s, name, v)?;
            Some(Value::String(s))
        }
        ConfigFieldType::StringList => {
            let Some(items) = value.as_array() else {
                return bad(v, name, "must be a list of strings");
            };
            if items.len() > MAX_LIST_ITEMS {
                return bad(v, name, format!("must have at most {MAX_LIST_ITEMS} items"));
            }
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let item_name = format!("{name}[{i}]");
                match item.as_str() {
                    Some(s) => match check_text(f, s, &item_name, v) {
                        Some(s) => out.push(Value::String(s)),
                        None => ok = false,
                    },
                    None => {
                        v.push(&item_name, "must be a string");
                        ok = false;
                    }
                }
            }
            ok.then_some(Value::Array(out))
        }
        ConfigFieldType::Object => match value {
            Value::Object(_) => Some(value.clone()),
            _ => bad(v, name, "must be an object"),
        },
    }
}

fn bad(v: &mut Issues, name: &str, issue: impl Into<String>) -> Option<Value> {
    v.push(name, issue);
    None
}

/// Checks a string (or a list item) against the field's choices and rule; answers it normalized.
fn check_text(f: &FieldSpec, s: &str, name: &str, v: &mut Issues) -> Option<String> {
    if !f.choices.is_empty() {
        return match f.choices.iter().find(|c| c.eq_ignore_ascii_case(s.trim())) {
            Some(c) => Some(c.to_string()),
            None => {
                v.push(name, format!("must be one of: {}", f.choices.join(", ")));
                None
            }
        };
    }
    let issue = match f.rule {
        Rule::Any => None,
        Rule::NonEmpty => s.trim().is_empty().then_some("must not be empty"),
        Rule::Command => {
            (s.is_empty() || s.chars().any(char::is_whitespace)).then_some("must be a program name without spaces")
        }
        Rule::Host => (!is_host_pattern(s)).then_some("must be a host name, host:port or *.suffix"),
        Rule::Module => (!is_module_name(s)).then_some("must be a Python module name"),
        Rule::PythonClass => (!s
            .split_once(':')
            .is_some_and(|(module, class)| is_module_name(module) && is_module_name(class) && !class.contains('.')))
        .then_some("must name a Python class as module:Class"),
        Rule::JsonText => serde_json::from_str::<Value>(s)
            .is_err()
            .then_some("must be valid JSON text"),
    };
    match issue {
        Some(issue) => {
            v.push(name, issue);
            None
        }
        None => Some(s.to_string()),
    }
}

/// `example.com`, `api.example.com:8443`, `10.0.0.1`, `*.example.com`.
pub fn is_host_pattern(s: &str) -> bool {
    let host = s.strip_prefix("*.").unwrap_or(s);
    let host = match host.rsplit_once(':') {
        Some((h, port)) => {
            if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
                return false;
            }
            h
        }
        None => host,
    };
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `host` (no port) is admitted by an `allowed_hosts` list (empty: every host).
pub fn host_allowed(allowed_hosts: &[String], host: &str, port: Option<u16>) -> bool {
    if allowed_hosts.is_empty() {
        return true;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allowed_hosts.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()),
            None => (pattern.clone(), None),
        };
        if pattern_port.is_some() && pattern_port != port {
            return false;
        }
        match pattern_host.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
            None => host == pattern_host,
        }
    })
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut bytes = part.bytes();
            matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// Shallow merge as the reference does (`{**base, **override}`): each key of the override
/// replaces the base's whole value.
pub fn merge_configuration(base: &Value, override_: Option<&Value>) -> Value {
    let mut out = base.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(o)) = override_ {
        for (k, v) in o {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// The shell skill's command line checker (API §10).

/// The shell skill's settings as the worker uses them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShellConfig {
    #[serde(default)]
    pub allowed_commands: Vec<String>,
    #[serde(default)]
    pub blocked_commands: Vec<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub working_directory: Option<String>,
}

impl ShellConfig {
    /// Checks a command line against this skill's lists.
    pub fn check(&self, line: &str) -> Result<(), CommandRefusal> {
        check_command_line(&self.allowed_commands, &self.blocked_commands, line)
    }
}

/// Why a shell command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandRefusal {
    /// The allow list is not empty and this program is not on it.
    NotAllowed(String),
    /// This program is on the block list.
    Blocked(String),
    /// `$(…)`, backticks or `<(…)`: commands hidden inside words cannot be checked.
    Substitution,
    /// A quote is never closed.
    UnterminatedQuote,
    /// A command that runs other commands (`env`, `sh -c`, `find -exec`, …), not itself
    /// allowed: the command it names, and the part of the line it is in.
    RunsCommands { command: String, part: String },
    /// A `VAR=value` assignment (`PATH=…`, `LD_PRELOAD=…` change what a command runs).
    Assignment { word: String, part: String },
    /// A program name that the shell would expand (`$X`, `/bin/r?`), so it cannot be checked.
    NotPlain(String),
}

impl std::fmt::Display for CommandRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAllowed(c) => write!(f, "command '{c}' is not in allowed_commands"),
            Self::Blocked(c) => write!(f, "command '{c}' is in blocked_commands"),
            Self::Substitution => f.write_str("command substitution is not allowed when commands are restricted"),
            Self::UnterminatedQuote => f.write_str("the command line has an unterminated quote"),
            Self::RunsCommands { command, part } => write!(
                f,
                "'{command}' runs other commands and is not itself in allowed_commands (in '{part}')"
            ),
            Self::Assignment { word, part } => write!(
                f,
                "the assignment '{word}' is not allowed when commands are restricted (in '{part}')"
            ),
            Self::NotPlain(c) => write!(
                f,
                "the command name '{c}' is expanded by the shell and cannot be checked"
            ),
        }
    }
}

impl std::error::Error for CommandRefusal {}

/// Checks a command line: it is split on `;`, `&&`, `||`, `|`, `&`, newlines and parentheses;
/// each part's program (its first word after redirections and shell keywords such as
/// `if`/`then`/`do`/`!`, with quotes and escapes resolved) must be on `allowed` when that list
/// is non-empty, and never on `blocked` (compared with the word and with its file name, so
/// `/bin/rm` is `rm`).
///
/// With both lists empty every line passes. When either list is set, command substitution,
/// `VAR=value` assignments and program names the shell would expand are refused, and so are
/// commands that run other commands (`env`, `xargs`, `sh`, `sudo`, `find -exec`, `git -c`,
/// `awk` with `system(`, …) unless that exact command is on the allow list.
pub fn check_command_line(allowed: &[String], blocked: &[String], line: &str) -> Result<(), CommandRefusal> {
    if allowed.is_empty() && blocked.is_empty() {
        return Ok(());
    }
    for words in split_command_line(line)? {
        let part = || words.join(" ");
        let Some(at) = program_index(&words) else {
            if let Some(w) = words.iter().find(|w| is_assignment(w)) {
                return Err(CommandRefusal::Assignment {
                    word: w.clone(),
                    part: part(),
                });
            }
            continue;
        };
        let program = words[at].as_str();
        let base = program.rsplit('/').next().unwrap_or(program);
        if blocked.iter().any(|b| b == program || b == base) {
            return Err(CommandRefusal::Blocked(program.to_string()));
        }
        if let Some(w) = words[..at].iter().find(|w| is_assignment(w)) {
            return Err(CommandRefusal::Assignment {
                word: w.clone(),
                part: part(),
            });
        }
        if program.contains(['$', '*', '?', '[', '{', '~']) {
            return Err(CommandRefusal::NotPlain(program.to_string()));
        }
        if !allowed.is_empty() && !allowed.iter().any(|a| a == program) {
            return Err(CommandRefusal::NotAllowed(program.to_string()));
        }
        if let Some(command) = runs_commands(base, &words[at + 1..])
            && !allowed.contains(&command)
        {
            return Err(CommandRefusal::RunsCommands { command, part: part() });
        }
    }
    Ok(())
}

/// Programs that run a command given in their arguments, whatever the arguments.
const COMMAND_RUNNERS: &[&str] = &[
    "env", "xargs", "sh", "bash", "zsh", "dash", "ksh", "ash", "fish", "csh", "tcsh", "eval", "exec", "nohup",
    "timeout", "nice", "ionice", "sudo", "doas", "su", "runuser", "command", "builtin", ".", "source", "setsid",
    "stdbuf", "chroot", "unshare", "nsenter", "flock", "watch", "parallel", "strace", "ltrace", "taskset", "chrt",
    "script", "busybox", "time", "unbuffer",
];

/// The command as it must appear on the allow list when `program` with these arguments runs
/// other commands (`env`, `find -exec`, `git -c`, `awk system(`); `None` when it does not.
fn runs_commands(program: &str, args: &[String]) -> Option<String> {
    if COMMAND_RUNNERS.contains(&program) {
        return Some(program.to_string());
    }
    match program {
        "find" => args
            .iter()
            .find(|a| matches!(a.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir"))
            .map(|a| format!("find {a}")),
        // Only git's own options, before its subcommand (`git grep -c` counts matches).
        "git" => {
            let mut i = 0;
            while let Some(a) = args.get(i).filter(|a| a.starts_with('-')) {
                if a == "-c" || a.starts_with("--config") || a.starts_with("--exec-path") {
                    return Some(format!("git {}", a.split('=').next().unwrap_or(a)));
                }
                i += if a == "-C" { 2 } else { 1 };
            }
            None
        }
        // An awk program can start commands with `system(…)` or pipe to and from them.
        "awk" | "gawk" | "mawk" | "nawk" => args
            .iter()
            .any(|a| !a.starts_with('-') && (a.contains("system") || a.contains('|')))
            .then(|| format!("{program} system(")),
        _ => None,
    }
}

/// Words that precede a command without being its program.
const SHELL_KEYWORDS: &[&str] = &[
    "!", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "time", "{", "}", "esac",
];

/// Where a part's program is: after keywords, assignments and redirections.
fn program_index(words: &[String]) -> Option<usize> {
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        if SHELL_KEYWORDS.contains(&w) || is_assignment(w) {
            i += 1;
        } else if let Some(needs_target) = redirection(w) {
            i += if needs_target { 2 } else { 1 };
        } else {
            return Some(i);
        }
    }
    None
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => crate::environment::is_env_name(name),
        None => false,
    }
}

/// `Some(true)` for a bare redirection operator (`>`, `2>>`) whose target is the next word,
/// `Some(false)` for one with its target attached (`>out.txt`, `2>&1`), `None` otherwise.
fn redirection(w: &str) -> Option<bool> {
    let rest = w.trim_start_matches(|c: char| c.is_ascii_digit() || c == '&');
    if !rest.starts_with(['<', '>']) {
        return None;
    }
    let target = rest.trim_start_matches(['<', '>', '&', '|']);
    Some(target.is_empty())
}

/// Splits a command line into parts (lists of unquoted words), honouring quotes and escapes.
fn split_command_line(line: &str) -> Result<Vec<Vec<String>>, CommandRefusal> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut parts = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = Quote::None;
    let mut chars = line.chars().peekable();

    fn end_word(words: &mut Vec<String>, word: &mut String, in_word: &mut bool) {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    }

    while let Some(c) = chars.next() {
        match quote {
            Quote::Single => {
                if c == '\'' {
                    quote = Quote::None;
                } else {
                    word.push(c);
                }
            }
            Quote::Double => match c {
                '"' => quote = Quote::None,
                '`' => return Err(CommandRefusal::Substitution),
                '$' if chars.peek() == Some(&'(') => return Err(CommandRefusal::Substitution),
                '\\' => match chars.next() {
                    Some(n @ ('"' | '\\' | '$' | '`')) => word.push(n),
                    Some('\n') => {}
                    Some(n) => {
                        word.push('\\');
                        word.push(n);
                    }
                    None => return Err(CommandRefusal::UnterminatedQuote),
                },
                _ => word.push(c),
            },
            Quote::None => match c {
                '\'' => {
                    quote = Quote::Single;
                    in_word = true;
                }
                '"' => {
                    quote = Quote::Double;
                    in_word = true;
                }
                '\\' => {
                    if let Some(n) = chars.next()
                        && n != '\n'
                    {
                        word.push(n);
                        in_word = true;
                    }
                }
                '`' => return Err(CommandRefusal::Substitution),
                '$' if chars.peek() == Some(&'(') => return Err(CommandRefusal::Substitution),
                '<' | '>' if chars.peek() == Some(&'(') => return Err(CommandRefusal::Substitution),
                // `2>&1`, `>&2`, `&>file` and `>|file` are redirections, not separators.
                '&' | '|' if word.ends_with(['<', '>']) => {
                    word.push(c);
                    in_word = true;
                }
                '&' if chars.peek() == Some(&'>') => {
                    end_word(&mut words, &mut word, &mut in_word);
                    word.push(c);
                    in_word = true;
                }
                ';' | '\n' | '\r' | '|' | '&' | '(' | ')' => {
                    end_word(&mut words, &mut word, &mut in_word);
                    if !words.is_empty() {
                        parts.push(std::mem::take(&mut words));
                    }
                }
                '#' if !in_word => {
                    // A comment runs to the end of the line.
                    for n in chars.by_ref() {
                        if n == '\n' {
                            break;
                        }
                    }
                    end_word(&mut words, &mut word, &mut in_word);
                    if !words.is_empty() {
                        parts.push(std::mem::take(&mut words));
                    }
                }
                c if c.is_whitespace() => end_word(&mut words, &mut word, &mut in_word),
                _ => {
                    word.push(c);
                    in_word = true;
                }
            },
        }
    }
    if quote != Quote::None {
        return Err(CommandRefusal::UnterminatedQuote);
    }
    end_word(&mut words, &mut word, &mut in_word);
    if !words.is_empty() {
        parts.push(words);
    }
    Ok(parts)
}

// ---------------------------------------------------------------------------------------------
// Templates: ready-made skills.

/// A ready-made skill (`GET /skills/templates`): create one with its `type` and `configuration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillTemplate {
    /// A stable slug.
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub skill_type: SkillType,
    pub description: String,
    pub icon: String,
    pub category: String,
    /// Normalized: every default filled in.
    #[schema(value_type = Object)]
    pub configuration: Value,
}

struct TemplateSpec {
    id: &'static str,
    name: &'static str,
    ty: SkillType,
    description: &'static str,
    configuration: fn() -> Value,
}

const TEMPLATES: &[TemplateSpec] = &[
    TemplateSpec {
        id: "read-only-shell",
        name: "Read-only shell",
        ty: SkillType::Shell,
        description: "Inspect the host with read-only commands (ls, cat, grep, find, …); nothing that changes it.",
        configuration: || {
            serde_json::json!({
                "allowed_commands": ["ls", "cat", "grep", "find", "head", "tail", "wc", "pwd", "echo", "ps", "df",
                                     "du", "stat", "file", "which", "uname", "whoami", "date", "sort", "uniq"],
                "blocked_commands": ["rm", "mv", "dd", "mkfs", "shutdown", "reboot", "sudo", "su"],
                "timeout": 30
            })
        },
    },
    TemplateSpec {
        id: "file-system-sandbox",
        name: "File system sandbox",
        ty: SkillType::FileSystem,
        description: "Read and write files, confined to a workspace directory.",
        configuration: || serde_json::json!({"base_dir": "./workspace"}),
    },
    TemplateSpec {
        id: "file-system-read-only",
        name: "Read-only file system",
        ty: SkillType::FileSystem,
        description: "Read, list and search files without changing any.",
        configuration: || serde_json::json!({"enable_save_file": false}),
    },
    TemplateSpec {
        id: "github-api",
        name: "GitHub API",
        ty: SkillType::Http,
        description: "Call the GitHub REST API at api.github.com (read-only methods).",
        configuration: || serde_json::json!({"allowed_hosts": ["api.github.com"], "allowed_methods": ["GET", "HEAD"], "timeout": 30}),
    },
    TemplateSpec {
        id: "python-sandbox",
        name: "Python sandbox",
        ty: SkillType::Python,
        description: "Run Python without process, network or file system modules.",
        configuration: || {
            serde_json::json!({
                "blocked_imports": ["os", "subprocess", "sys", "socket", "shutil", "ctypes", "multiprocessing",
                                    "pathlib", "urllib", "http"],
                "timeout": 60
            })
        },
    },
    TemplateSpec {
        id: "docker-containers",
        name: "Docker containers",
        ty: SkillType::Docker,
        description: "Run, list and stop containers; images, volumes and networks stay untouched.",
        configuration: || serde_json::json!({}),
    },
    TemplateSpec {
        id: "report-files",
        name: "Report files",
        ty: SkillType::FileGeneration,
        description: "Write reports as JSON, CSV, PDF or text into ./reports.",
        configuration: || serde_json::json!({"output_directory": "./reports"}),
    },
    TemplateSpec {
        id: "diagrams",
        name: "Diagrams",
        ty: SkillType::DataVisualization,
        description: "Draw Mermaid diagrams and charts.",
        configuration: || serde_json::json!({}),
    },
];

/// The ready-made skills, configurations normalized.
pub fn templates() -> Vec<SkillTemplate> {
    TEMPLATES
        .iter()
        .map(|t| {
            let raw = (t.configuration)();
            // The table is ours; a template that stopped validating is caught by a unit test.
            let configuration = validate_configuration(t.ty, &raw).unwrap_or(raw);
            let spec = spec(t.ty);
            SkillTemplate {
                id: t.id.to_string(),
                name: t.name.to_string(),
                skill_type: t.ty,
                description: t.description.to_string(),
                icon: spec.icon.to_string(),
                category: spec.category.to_string(),
                configuration,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Resources.

const NAME_MAX: usize = 100;
const DESCRIPTION_MAX: usize = 10_000;
const ICON_MAX: usize = 100;

/// A skill of an organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Skill {
    pub id: Uuid,
    pub organization_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub skill_type: SkillType,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub enabled: bool,
    /// Normalized against the type's definition.
    #[schema(value_type = Object)]
    pub configuration: Value,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateSkill {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: String,
    #[serde(rename = "type", alias = "skill_type")]
    pub skill_type: SkillType,
    #[schema(max_length = 10000)]
    pub description: Option<String>,
    /// Default: the type's icon.
    #[schema(max_length = 100)]
    pub icon: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Validated against the type's definition; defaults are filled in.
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
}

impl CreateSkill {
    /// Checks every field; answers the normalized configuration.
    pub fn validate(&self) -> Result<Value, Vec<FieldIssue>> {
        let mut v = Issues::new();
        v.length("name", &self.name, 1, NAME_MAX);
        v.max_length("description", self.description.as_deref(), DESCRIPTION_MAX);
        v.max_length("icon", self.icon.as_deref(), ICON_MAX);
        let empty = Value::Object(Map::new());
        let config = self.configuration.as_ref().unwrap_or(&empty);
        let normalized = validate_configuration(self.skill_type, config);
        let mut issues = v.finish().err().unwrap_or_default();
        match normalized {
            Ok(c) if issues.is_empty() => Ok(c),
            Ok(_) => Err(issues),
            Err(more) => {
                issues.extend(more);
                Err(issues)
            }
        }
    }
}

/// Partial update (PATCH and PUT): absent fields stay, `null` clears `description` and `icon`;
/// a new `configuration` replaces the old one whole and is validated against the skill's type.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct UpdateSkill {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 10000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 100)]
    pub icon: Option<Option<String>>,
    pub enabled: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
}

impl UpdateSkill {
    /// Checks every field given; answers the normalized configuration when one was given.
    pub fn validate(&self, ty: SkillType) -> Result<Option<Value>, Vec<FieldIssue>> {
        let mut v = Issues::new();
        if let Some(name) = &self.name {
            v.length("name", name, 1, NAME_MAX);
        }
        if let Some(Some(d)) = &self.description {
            v.max_length("description", Some(d), DESCRIPTION_MAX);
        }
        if let Some(Some(i)) = &self.icon {
            v.max_length("icon", Some(i), ICON_MAX);
        }
        let mut issues = v.finish().err().unwrap_or_default();
        let normalized = match &self.configuration {
            Some(c) => match validate_configuration(ty, c) {
                Ok(c) => Some(c),
                Err(more) => {
                    issues.extend(more);
                    None
                }
            },
            None => None,
        };
        if issues.is_empty() { Ok(normalized) } else { Err(issues) }
    }
}

/// `POST /skills/validate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ValidateSkill {
    #[serde(rename = "type", alias = "skill_type")]
    pub skill_type: SkillType,
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
}

/// The answer of both validate endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillValidation {
    pub valid: bool,
    pub errors: Vec<FieldIssue>,
    /// The normalized configuration; `null` when invalid.
    #[schema(value_type = Option<Object>)]
    pub configuration: Option<Value>,
}

impl SkillValidation {
    /// Validates `config` against `ty` and reports the outcome instead of failing.
    pub fn of(ty: SkillType, config: &Value) -> SkillValidation {
        match validate_configuration(ty, config) {
            Ok(c) => SkillValidation {
                valid: true,
                errors: Vec::new(),
                configuration: Some(c),
            },
            Err(errors) => SkillValidation {
                valid: false,
                errors,
                configuration: None,
            },
        }
    }
}

/// `POST /skills/associations/{entity_type}/{entity_id}/skills`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CreateSkillAssociation {
    pub skill_id: Uuid,
    /// Keys that replace the skill's own for this entity; validated per key against the type.
    #[schema(value_type = Option<Object>)]
    pub configuration_override: Option<Value>,
}

/// A skill attached to an agent, team or environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillAssociation {
    pub id: Uuid,
    pub organization_id: String,
    pub skill_id: Uuid,
    pub entity_type: SkillEntityType,
    pub entity_id: Uuid,
    #[schema(value_type = Option<Object>)]
    pub configuration_override: Option<Value>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub created_at: DateTime<Utc>,
}

/// A skill as attached to one entity (`GET …/skills` of an association path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssociatedSkill {
    /// The skill's id.
    pub id: Uuid,
    pub association_id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub skill_type: SkillType,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub enabled: bool,
    /// The skill's configuration with this association's override applied.
    #[schema(value_type = Object)]
    pub configuration: Value,
    #[schema(value_type = Option<Object>)]
    pub configuration_override: Option<Value>,
    #[serde(serialize_with = "crate::common::rfc3339::serialize")]
    pub associated_at: DateTime<Utc>,
}

/// `POST /skills/associate`: the Python client's bulk form.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AssociateSkills {
    /// agent(s), team(s) or environment(s); absent: inferred from the id.
    #[schema(pattern = "^(agent|team|environment)s?$")]
    pub entity_type: Option<String>,
    pub entity_id: Uuid,
    #[schema(max_items = 100)]
    pub skill_ids: Vec<Uuid>,
}

/// The most skills one `POST /skills/associate` may name.
pub const MAX_ASSOCIATE: usize = 100;

/// The answer of `POST /skills/associate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SkillsAssociated {
    pub entity_type: SkillEntityType,
    pub entity_id: Uuid,
    /// The skills asked for (each once), all associated now.
    pub skill_ids: Vec<Uuid>,
    /// How many of them were newly associated (the others already were).
    pub associated: usize,
}

/// A skill as an agent or team gets it after inheritance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResolvedSkill {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub skill_type: SkillType,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub enabled: bool,
    /// The skill's configuration with every layer's override applied, earliest first.
    #[schema(value_type = Object)]
    pub configuration: Value,
    /// The layer the skill is taken from: the last one that attaches it.
    pub source: SkillEntityType,
    /// The id of that layer's entity.
    pub source_id: Uuid,
    /// True unless the skill is attached to the entity itself.
    pub inherited: bool,
}

/// One association met on the way to an entity: the skill and the layer that attaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct SkillLayer {
    pub skill_id: Uuid,
    pub name: String,
    pub skill_type: SkillType,
    pub description: Option<String>,
    pub icon: Option<String>,
    pub enabled: bool,
    pub configuration: Value,
    pub configuration_override: Option<Value>,
    pub source: SkillEntityType,
    pub source_id: Uuid,
}

/// Merges layers given earliest first (environments, then teams, then the entity itself): a
/// later layer overrides an earlier one for the same skill, taking over `source` and applying
/// its override on top of the earlier ones. Skills keep the order of their first appearance.
pub fn resolve_layers(entity: EntityRef, layers: impl IntoIterator<Item = SkillLayer>) -> Vec<ResolvedSkill> {
    let mut out: Vec<ResolvedSkill> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for layer in layers {
        let inherited = !(layer.source == entity.kind && layer.source_id == entity.id);
        match index.get(&layer.skill_id) {
            Some(&i) => {
                let r = &mut out[i];
                r.configuration = merge_configuration(&r.configuration, layer.configuration_override.as_ref());
                r.source = layer.source;
                r.source_id = layer.source_id;
                r.inherited = inherited;
            }
            None => {
                index.insert(layer.skill_id, out.len());
                out.push(ResolvedSkill {
                    id: layer.skill_id,
                    configuration: merge_configuration(&layer.configuration, layer.configuration_override.as_ref()),
                    name: layer.name,
                    skill_type: layer.skill_type,
                    description: layer.description,
                    icon: layer.icon,
                    enabled: layer.enabled,
                    source: layer.source,
                    source_id: layer.source_id,
                    inherited,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|i| i.to_string()).collect()
    }

    fn fields(issues: &[FieldIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.field.as_str()).collect()
    }

    #[test]
    fn wire_names_match() {
        for t in SkillType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        for t in SkillEntityType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        for t in ConfigFieldType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
    }

    #[test]
    fn every_definition_is_consistent() {
        for def in definitions() {
            let mut names = std::collections::HashSet::new();
            for f in &def.config_schema {
                assert!(names.insert(f.name.clone()), "{} repeats {}", def.skill_type, f.name);
                if let Some(d) = &f.default {
                    // Each default passes its own field's check.
                    let one = json!({ f.name.clone(): d.clone() });
                    assert!(
                        validate_override(def.skill_type, &one).is_ok(),
                        "{} {}",
                        def.skill_type,
                        f.name
                    );
                }
            }
            // An MCP server needs a command or a URL, depending on its type.
            let required = def.config_schema.iter().any(|f| f.required) || def.skill_type == SkillType::Mcp;
            assert_eq!(
                validate_configuration(def.skill_type, &def.default_configuration).is_ok(),
                !required,
                "{}",
                def.skill_type
            );
        }
    }

    #[test]
    fn templates_validate_and_have_unique_ids() {
        let mut ids = std::collections::HashSet::new();
        for t in TEMPLATES {
            assert!(ids.insert(t.id));
            let raw = (t.configuration)();
            assert!(validate_configuration(t.ty, &raw).is_ok(), "{}", t.id);
        }
        let github = templates().into_iter().find(|t| t.id == "github-api").unwrap();
        assert_eq!(github.configuration["allowed_hosts"], json!(["api.github.com"]));
        assert_eq!(github.configuration["timeout"], 30);
    }

    #[test]
    fn shell_configuration_is_normalized() {
        let c = validate_configuration(
            SkillType::Shell,
            &json!({"allowed_commands": ["ls"], "working_directory": null}),
        )
        .unwrap();
        assert_eq!(
            c,
            json!({"allowed_commands": ["ls"], "blocked_commands": [], "shell_args": [], "timeout": 30})
        );
    }

    #[test]
    fn shell_timeout_bounds_and_types() {
        for (config, field) in [
            (json!({"timeout": 0}), "configuration.timeout"),
            (json!({"timeout": 601}), "configuration.timeout"),
            (json!({"timeout": "30"}), "configuration.timeout"),
            (json!({"timeout": 1.5}), "configuration.timeout"),
            (json!({"allowed_commands": "ls"}), "configuration.allowed_commands"),
            (
                json!({"allowed_commands": ["ls", 3]}),
                "configuration.allowed_commands[1]",
            ),
            (
                json!({"blocked_commands": ["rm -rf"]}),
                "configuration.blocked_commands[0]",
            ),
            (json!({"command_whitelist": []}), "configuration.command_whitelist"),
        ] {
            let issues = validate_configuration(SkillType::Shell, &config).unwrap_err();
            assert_eq!(fields(&issues), vec![field], "{config}");
        }
        assert!(validate_configuration(SkillType::Shell, &json!({"timeout": 1})).is_ok());
        assert!(validate_configuration(SkillType::Shell, &json!({"timeout": 600})).is_ok());
        let issues = validate_configuration(SkillType::Shell, &json!([])).unwrap_err();
        assert_eq!(fields(&issues), vec!["configuration"]);
    }

    #[test]
    fn every_issue_is_reported() {
        let issues = validate_configuration(
            SkillType::FileSystem,
            &json!({"enable_read_file": "yes", "base_dir": 3, "nope": 1}),
        )
        .unwrap_err();
        let mut f = fields(&issues);
        f.sort();
        assert_eq!(
            f,
            vec![
                "configuration.base_dir",
                "configuration.enable_read_file",
                "configuration.nope"
            ]
        );
    }

    #[test]
    fn http_hosts_methods_and_timeout() {
        let c = validate_configuration(
            SkillType::Http,
            &json!({"allowed_hosts": ["api.github.com", "*.example.com", "localhost:8080"], "allowed_methods": ["get", "Post"]}),
        )
        .unwrap();
        assert_eq!(c["allowed_methods"], json!(["GET", "POST"]));
        assert_eq!(c["timeout"], 30);
        for bad in [
            json!({"allowed_hosts": ["https://api.github.com"]}),
            json!({"allowed_hosts": ["api.github.com/path"]}),
            json!({"allowed_hosts": ["*"]}),
            json!({"allowed_hosts": ["host:0"]}),
            json!({"allowed_methods": ["FETCH"]}),
            json!({"timeout": 301}),
        ] {
            assert!(validate_configuration(SkillType::Http, &bad).is_err(), "{bad}");
        }
        let hosts = s(&["api.github.com", "*.example.com", "localhost:8080"]);
        assert!(host_allowed(&hosts, "api.github.com", None));
        assert!(host_allowed(&hosts, "API.GitHub.com.", Some(443)));
        assert!(host_allowed(&hosts, "a.b.example.com", None));
        assert!(!host_allowed(&hosts, "example.com", None));
        assert!(!host_allowed(&hosts, "evilexample.com", None));
        assert!(host_allowed(&hosts, "localhost", Some(8080)));
        assert!(!host_allowed(&hosts, "localhost", Some(80)));
        assert!(host_allowed(&[], "anything", None));
    }

    #[test]
    fn other_types() {
        assert!(validate_configuration(SkillType::Custom, &json!({})).is_err());
        let c = validate_configuration(SkillType::Custom, &json!({"custom_class": "pkg:Tool"})).unwrap();
        assert_eq!(c["custom_config"], json!({}));
        assert!(
            validate_configuration(SkillType::Custom, &json!({"custom_class": "x:Y", "custom_config": []})).is_err()
        );
        for bad_class in ["x", "x:", ":Y", "a-b:Y", "x:Y.Z", "x:Y:Z"] {
            let issues = validate_configuration(SkillType::Custom, &json!({"custom_class": bad_class})).unwrap_err();
            assert_eq!(fields(&issues), vec!["configuration.custom_class"], "{bad_class}");
        }
        for (config, field) in [
            (
                json!({"parameters": {"type": "string"}}),
                "configuration.custom_config.parameters",
            ),
            (json!({"parameters": []}), "configuration.custom_config.parameters"),
            (json!({"init": 1}), "configuration.custom_config.init"),
            (
                json!({"python_path": ["relative"]}),
                "configuration.custom_config.python_path",
            ),
        ] {
            let issues = validate_configuration(
                SkillType::Custom,
                &json!({"custom_class": "pkg.mod:Tool", "custom_config": config}),
            )
            .unwrap_err();
            assert_eq!(fields(&issues), vec![field]);
        }
        let issues =
            validate_configuration(SkillType::WorkflowExecutor, &json!({"workflow_type": "python_dsl"})).unwrap_err();
        assert_eq!(fields(&issues), vec!["configuration.workflow_type"]);
        assert!(issues[0].issue.contains("only JSON"), "{issues:?}");
        let issues = validate_override(SkillType::WorkflowExecutor, &json!({"python_dsl_code": "x"})).unwrap_err();
        assert_eq!(fields(&issues), vec!["configuration_override.python_dsl_code"]);
        assert!(validate_configuration(SkillType::WorkflowExecutor, &json!({"workflow_type": "yaml"})).is_err());
        assert!(validate_configuration(SkillType::WorkflowExecutor, &json!({"workflow_definition": "{nope"})).is_err());
        let c = validate_configuration(
            SkillType::WorkflowExecutor,
            &json!({"workflow_definition": "{\"steps\":[]}"}),
        )
        .unwrap();
        assert_eq!(
            (c["workflow_type"].as_str(), c["timeout"].as_i64()),
            (Some("json"), Some(3600))
        );
        assert!(
            validate_configuration(SkillType::Python, &json!({"blocked_imports": ["os.path", "bad-name"]})).is_err()
        );
        let m = validate_configuration(SkillType::Mcp, &json!({"command": "npx", "args": ["-y", "srv"]})).unwrap();
        assert_eq!((m["type"].as_str(), m["timeout"].as_i64()), (Some("stdio"), Some(60)));
        for (config, field) in [
            (json!({}), "configuration.command"),
            (json!({"type": "http"}), "configuration.url"),
            (json!({"type": "http", "url": "ftp://x"}), "configuration.url"),
            (json!({"command": "x", "env": {"A": 1}}), "configuration.env"),
            (
                json!({"type": "sse", "url": "https://x/sse", "headers": {"A": []}}),
                "configuration.headers",
            ),
            (json!({"type": "ws", "command": "x"}), "configuration.type"),
        ] {
            let issues = validate_configuration(SkillType::Mcp, &config).unwrap_err();
            assert_eq!(fields(&issues), vec![field], "{config}");
        }
        assert!(validate_override(SkillType::Mcp, &json!({"allowed_tools": ["echo"]})).is_ok());
        let d = validate_configuration(SkillType::Docker, &json!({})).unwrap();
        assert_eq!(d["enable_container_management"], true);
        assert_eq!(d["enable_image_management"], false);
    }

    #[test]
    fn overrides_are_partial() {
        assert_eq!(
            validate_override(SkillType::Shell, &json!({"timeout": 60})).unwrap(),
            json!({"timeout": 60})
        );
        assert_eq!(validate_override(SkillType::Custom, &json!({})).unwrap(), json!({}));
        let issues = validate_override(SkillType::Shell, &json!({"timeout": 0, "x": 1})).unwrap_err();
        let mut f = fields(&issues);
        f.sort();
        assert_eq!(f, vec!["configuration_override.timeout", "configuration_override.x"]);
    }

    #[test]
    fn command_lines_are_checked_part_by_part() {
        let allowed = s(&["ls", "cat", "grep", "echo"]);
        let blocked = s(&["rm"]);
        let ok = |line: &str| check_command_line(&allowed, &blocked, line);
        assert_eq!(ok("ls -la /tmp"), Ok(()));
        assert_eq!(ok("cat a.txt | grep x && echo done; ls\nls"), Ok(()));
        assert_eq!(ok("ls 2>&1 | grep x >out.txt"), Ok(()));
        assert_eq!(ok("echo 'a; rm -rf /' \"b | rm\""), Ok(()));
        assert_eq!(ok(""), Ok(()));
        assert_eq!(ok("  ;; "), Ok(()));
        assert_eq!(ok("ls # rm -rf /"), Ok(()));
        assert_eq!(ok("if ls; then echo yes; fi"), Ok(()));
        assert_eq!(ok("ls; rm -rf /"), Err(CommandRefusal::Blocked("rm".into())));
        assert_eq!(ok("ls && /bin/rm x"), Err(CommandRefusal::Blocked("/bin/rm".into())));
        assert_eq!(ok("ls || curl evil"), Err(CommandRefusal::NotAllowed("curl".into())));
        assert_eq!(ok("ls | sh"), Err(CommandRefusal::NotAllowed("sh".into())));
        assert_eq!(ok("ls\nwget x"), Err(CommandRefusal::NotAllowed("wget".into())));
        assert_eq!(ok("ls & curl x"), Err(CommandRefusal::NotAllowed("curl".into())));
        assert_eq!(ok("(curl x)"), Err(CommandRefusal::NotAllowed("curl".into())));
        assert_eq!(ok("'rm' -rf /"), Err(CommandRefusal::Blocked("rm".into())));
        assert_eq!(ok("FOO=1 rm x"), Err(CommandRefusal::Blocked("rm".into())));
        assert_eq!(ok("> out rm x"), Err(CommandRefusal::Blocked("rm".into())));
        assert_eq!(ok("! rm x"), Err(CommandRefusal::Blocked("rm".into())));
        assert_eq!(ok("/bin/ls"), Err(CommandRefusal::NotAllowed("/bin/ls".into())));
        assert_eq!(ok("echo $(rm -rf /)"), Err(CommandRefusal::Substitution));
        assert_eq!(ok("echo \"`rm x`\""), Err(CommandRefusal::Substitution));
        assert_eq!(ok("cat <(curl x)"), Err(CommandRefusal::Substitution));
        assert_eq!(ok("echo '$(ok)'"), Ok(()));
        assert_eq!(ok("echo 'unterminated"), Err(CommandRefusal::UnterminatedQuote));
    }

    /// Each line: the allow list, the block list, the command line, and `None` when it runs or
    /// the part of the refusal's message that names what was refused.
    #[test]
    fn commands_that_run_commands_and_quoting_tricks() {
        type Case = (
            &'static [&'static str],
            &'static [&'static str],
            &'static str,
            Option<&'static str>,
        );
        let ls = &["ls", "cat", "echo", "find", "git", "awk", "grep"][..];
        let none = &[][..];
        let rm = &["rm"][..];
        let table: &[Case] = &[
            // Quoting and escapes resolve to the real name before the check.
            (ls, rm, "r''m -rf /", Some("'rm' is in blocked")),
            (ls, rm, "\"r\"m x", Some("'rm' is in blocked")),
            (ls, rm, "\\rm x", Some("'rm' is in blocked")),
            (ls, rm, "'r'\"m\" x", Some("'rm' is in blocked")),
            (none, rm, "r\\m x", Some("'rm' is in blocked")),
            (ls, none, "l''s -la", None),
            // Leading assignments change what runs (PATH, LD_PRELOAD).
            (ls, none, "FOO=1 ls", Some("assignment 'FOO=1'")),
            (ls, none, "PATH=/tmp ls", Some("assignment 'PATH=/tmp'")),
            (
                none,
                rm,
                "LD_PRELOAD=/x.so cat y",
                Some("assignment 'LD_PRELOAD=/x.so'"),
            ),
            (none, rm, "X=rm; $X -rf /", Some("assignment 'X=rm'")),
            (ls, none, "echo FOO=1", None),
            // Names the shell expands cannot be checked.
            (none, rm, "$X -rf /", Some("'$X' is expanded")),
            (none, rm, "/bin/r? -rf /", Some("'/bin/r?' is expanded")),
            (none, rm, "{rm,-rf,/}", Some("'{rm,-rf,/}' is expanded")),
            // Wrappers run what follows them: refused unless allowed themselves.
            (
                none,
                rm,
                "env rm x",
                Some("'env' runs other commands and is not itself in allowed_commands (in 'env rm x')"),
            ),
            (none, rm, "env", Some("'env' runs other commands")),
            (
                none,
                rm,
                "ls | xargs rm",
                Some("'xargs' runs other commands and is not itself in allowed_commands (in 'xargs rm')"),
            ),
            (
                none,
                rm,
                "sh -c 'rm x'",
                Some("'sh' runs other commands and is not itself in allowed_commands (in 'sh -c rm x')"),
            ),
            (none, rm, "bash -c 'rm x'", Some("'bash' runs")),
            (none, rm, "/bin/zsh -c 'rm x'", Some("'zsh' runs")),
            (none, rm, "eval 'rm x'", Some("'eval' runs")),
            (none, rm, "exec rm x", Some("'exec' runs")),
            (none, rm, "nohup rm x", Some("'nohup' runs")),
            (none, rm, "timeout 5 rm x", Some("'timeout' runs")),
            (none, rm, "nice -n 5 rm x", Some("'nice' runs")),
            (none, rm, "sudo rm x", Some("'sudo' runs")),
            (none, rm, "command rm x", Some("'command' runs")),
            (none, rm, ". ./script.sh", Some("'.' runs")),
            (
                none,
                rm,
                "find . -exec rm {} ;",
                Some("'find -exec' runs other commands"),
            ),
            (none, rm, "find . -execdir rm {} +", Some("'find -execdir' runs")),
            (ls, none, "find . -ok rm {} ;", Some("'find -ok' runs")),
            (ls, none, "find . -name '*.rs'", None),
            (
                none,
                rm,
                "git -c core.pager='rm x' log",
                Some("'git -c' runs other commands"),
            ),
            (
                ls,
                none,
                "git --config-env=core.pager=X log",
                Some("'git --config-env' runs"),
            ),
            (ls, none, "git -C repo -c alias.x=!rm x", Some("'git -c' runs")),
            (ls, none, "git grep -c foo", None),
            (ls, none, "git log --oneline", None),
            (ls, none, "awk 'BEGIN { system(\"rm x\") }'", Some("'awk system(' runs")),
            (none, rm, "gawk '{ print | \"sh\" }' f", Some("'gawk system(' runs")),
            (ls, none, "awk -F: '{ print $1 }' /etc/passwd", None),
            // On the allow list, the exact wrapper is the operator's choice.
            (&["env", "rm"], none, "env rm x", None),
            (&["sh"], none, "sh -c 'anything'", None),
            (&["find", "find -exec"], none, "find . -exec ls ;", None),
            (&["find"], none, "find . -exec ls ;", Some("'find -exec' runs")),
            (&["git", "git -c"], none, "git -c a=b log", None),
            (&["awk", "awk system("], none, "awk 'BEGIN{system(\"ls\")}'", None),
            // Substitutions and subshells stay refused.
            (none, rm, "echo $(rm x)", Some("substitution")),
            (none, rm, "echo `rm x`", Some("substitution")),
            (ls, none, "(rm x)", Some("'rm' is not in allowed")),
            (none, none, "env rm x; FOO=1 sh -c x", None),
        ];
        for (allowed, blocked, line, refused) in table {
            let got = check_command_line(&s(allowed), &s(blocked), line);
            match (refused, got) {
                (None, Ok(())) => {}
                (Some(want), Err(e)) => assert!(e.to_string().contains(want), "{line}: {e}"),
                (want, got) => panic!("{line}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn command_lists_alone() {
        // Only a block list: anything else runs.
        assert_eq!(check_command_line(&[], &s(&["rm"]), "curl x | grep y"), Ok(()));
        assert_eq!(
            check_command_line(&[], &s(&["rm"]), "curl x; rm y"),
            Err(CommandRefusal::Blocked("rm".into()))
        );
        // No lists: no restriction at all, substitution included.
        assert_eq!(check_command_line(&[], &[], "echo $(date); rm -rf x"), Ok(()));
        // Blocked wins over allowed.
        assert_eq!(
            check_command_line(&s(&["rm"]), &s(&["rm"]), "rm x"),
            Err(CommandRefusal::Blocked("rm".into()))
        );
        let cfg: ShellConfig = serde_json::from_value(json!({"allowed_commands": ["ls"], "timeout": 30})).unwrap();
        assert!(cfg.check("ls").is_ok());
        assert!(cfg.check("cat x").is_err());
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let agent = Uuid::now_v7();
        let team = Uuid::now_v7();
        let env = Uuid::now_v7();
        let skill = Uuid::now_v7();
        let other = Uuid::now_v7();
        let layer = |id: Uuid, source, source_id, o: Option<Value>| SkillLayer {
            skill_id: id,
            name: "x".into(),
            skill_type: SkillType::Shell,
            description: None,
            icon: None,
            enabled: true,
            configuration: json!({"timeout": 30, "allowed_commands": ["ls"]}),
            configuration_override: o,
            source,
            source_id,
        };
        let entity = EntityRef {
            kind: SkillEntityType::Agent,
            id: agent,
        };
        let out = resolve_layers(
            entity,
            [
                layer(
                    skill,
                    SkillEntityType::Environment,
                    env,
                    Some(json!({"timeout": 60, "working_directory": "/e"})),
                ),
                layer(other, SkillEntityType::Environment, env, None),
                layer(skill, SkillEntityType::Team, team, Some(json!({"timeout": 90}))),
                layer(
                    skill,
                    SkillEntityType::Agent,
                    agent,
                    Some(json!({"allowed_commands": ["cat"]})),
                ),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, skill);
        assert_eq!(out[0].source, SkillEntityType::Agent);
        assert!(!out[0].inherited);
        assert_eq!(
            out[0].configuration,
            json!({"timeout": 90, "allowed_commands": ["cat"], "working_directory": "/e"})
        );
        assert_eq!(out[1].id, other);
        assert!(out[1].inherited);
        assert_eq!(out[1].source_id, env);
    }

    #[test]
    fn entity_types_parse_singular_and_plural() {
        assert_eq!(SkillEntityType::parse_loose("agents"), Some(SkillEntityType::Agent));
        assert_eq!(SkillEntityType::parse_loose("Team"), Some(SkillEntityType::Team));
        assert_eq!(
            SkillEntityType::parse_loose("environments"),
            Some(SkillEntityType::Environment)
        );
        assert_eq!(SkillEntityType::parse_loose("projects"), None);
    }
}
