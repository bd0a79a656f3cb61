//! The docker skill: containers (run, list, logs, stop), images, volumes and networks as the
//! skill's `enable_*` flags allow, through the Docker Engine API (bollard) on the worker's
//! socket (`DOCKER_HOST=unix://…`, else /var/run/docker.sock). No engine: each call says so.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::process::{MAX_OUTPUT, cap_output};

/// Longest a run_container call waits for its container by default, and at most.
const RUN_WAIT: u64 = 300;
const MAX_RUN_WAIT: u64 = 1800;
/// Log lines answered.
const LOG_LINES: &str = "200";

/// One docker tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    RunContainer,
    ListContainers,
    ContainerLogs,
    StopContainer,
    ListImages,
    PullImage,
    RemoveImage,
    ListVolumes,
    CreateVolume,
    RemoveVolume,
    ListNetworks,
    CreateNetwork,
    RemoveNetwork,
}

impl Op {
    /// The op of a docker tool name (`docker_run_container`, …).
    pub fn of_tool(name: &str) -> Option<Op> {
        Some(match name.strip_prefix("docker_")? {
            "run_container" => Op::RunContainer,
            "list_containers" => Op::ListContainers,
            "container_logs" => Op::ContainerLogs,
            "stop_container" => Op::StopContainer,
            "list_images" => Op::ListImages,
            "pull_image" => Op::PullImage,
            "remove_image" => Op::RemoveImage,
            "list_volumes" => Op::ListVolumes,
            "create_volume" => Op::CreateVolume,
            "remove_volume" => Op::RemoveVolume,
            "list_networks" => Op::ListNetworks,
            "create_network" => Op::CreateNetwork,
            "remove_network" => Op::RemoveNetwork,
            _ => return None,
        })
    }

    pub fn parameters(self) -> Value {
        let string = |d: &str| json!({"type": "string", "description": d});
        let (properties, required): (Value, &[&str]) = match self {
            Op::RunContainer => (
                json!({
                    "image": string("Image reference, e.g. alpine:3.20"),
                    "command": {"type": "array", "items": {"type": "string"}, "description": "The command and its arguments"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                    "name": string("Container name"),
                    "wait": {"type": "boolean", "description": "Wait for it to end and answer its output (default true)"},
                    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_RUN_WAIT},
                }),
                &["image"],
            ),
            Op::ListContainers => (
                json!({"all": {"type": "boolean", "description": "Stopped ones too"}}),
                &[],
            ),
            Op::ContainerLogs | Op::StopContainer => (
                json!({"container": string("Container id or name"), "remove": {"type": "boolean"}}),
                &["container"],
            ),
            Op::PullImage | Op::RemoveImage => (json!({"image": string("Image reference")}), &["image"]),
            Op::CreateVolume | Op::RemoveVolume | Op::CreateNetwork | Op::RemoveNetwork => {
                (json!({"name": string("Its name")}), &["name"])
            }
            Op::ListImages | Op::ListVolumes | Op::ListNetworks => (json!({}), &[]),
        };
        json!({"type": "object", "properties": properties, "required": required})
    }
}

/// The engine on this host, if one answers.
pub async fn engine() -> Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults().map_err(|e| format!("no Docker engine: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(3), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(format!("no Docker engine answers on this worker host: {e}")),
        Err(_) => Err("the Docker engine on this worker host does not answer".into()),
    }
}

/// Runs one docker tool call for `execution`; its answer and whether it failed.
pub async fn run(op: Op, args: &Value, execution: Uuid) -> (String, bool) {
    let result = match engine().await {
        Ok(docker) => call(&docker, op, args, execution).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(answer) => (answer, false),
        Err(e) => (e, true),
    }
}

fn text<'a>(args: &'a Value, key: &str) -> Result<&'a str, String> {
    args[key]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("`{key}` is required"))
}

/// The listed items with only `keys` (the engine's own names), as JSON text.
fn listed<T: Serialize>(items: &[T], keys: &[&str]) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|item| {
            let full = serde_json::to_value(item).unwrap_or_default();
            keys.iter()
                .filter_map(|k| full.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect()
        })
        .collect();
    Value::Array(items).to_string()
}

async fn call(docker: &Docker, op: Op, args: &Value, execution: Uuid) -> Result<String, String> {
    let engine = |e: bollard::errors::Error| e.to_string();
    Ok(match op {
        Op::RunContainer => return run_container(docker, args, execution).await,
        Op::ListContainers => {
            let options = ListContainersOptionsBuilder::new()
                .all(args["all"].as_bool().unwrap_or(false))
                .build();
            let found = docker.list_containers(Some(options)).await.map_err(engine)?;
            listed(&found, &["Id", "Names", "Image", "State", "Status"])
        }
        Op::ContainerLogs => logs(docker, text(args, "container")?).await?,
        Op::StopContainer => {
            let container = text(args, "container")?;
            let options = StopContainerOptionsBuilder::new().t(10).build();
            docker.stop_container(container, Some(options)).await.map_err(engine)?;
            if args["remove"].as_bool().unwrap_or(false) {
                let options = RemoveContainerOptionsBuilder::new().force(true).build();
                docker
                    .remove_container(container, Some(options))
                    .await
                    .map_err(engine)?;
                format!("stopped and removed {container}")
            } else {
                format!("stopped {container}")
            }
        }
        Op::ListImages => {
            let found = docker
                .list_images(Some(ListImagesOptionsBuilder::new().build()))
                .await
                .map_err(engine)?;
            listed(&found, &["Id", "RepoTags", "Size"])
        }
        Op::PullImage => {
            let image = text(args, "image")?;
            // `name@sha256:…` is pulled as it is; `name:tag` by its tag; a bare name as latest.
            let (name, tag) = match image.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                _ if image.contains('@') => (image, ""),
                Some((name, tag)) => (name, tag),
                None => (image, "latest"),
            };
            let mut options = CreateImageOptionsBuilder::new().from_image(name);
            if !tag.is_empty() {
                options = options.tag(tag);
            }
            let options = options.build();
            let mut progress = docker.create_image(Some(options), None, None);
            while let Some(step) = progress.next().await {
                step.map_err(engine)?;
            }
            format!("pulled {image}")
        }
        Op::RemoveImage => {
            let image = text(args, "image")?;
            let options = RemoveImageOptionsBuilder::new().build();
            docker.remove_image(image, Some(options), None).await.map_err(engine)?;
            format!("removed {image}")
        }
        Op::ListVolumes => {
            let found = docker
                .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
                .await
                .map_err(engine)?;
            listed(&found.volumes.unwrap_or_default(), &["Name", "Driver", "Mountpoint"])
        }
        Op::CreateVolume => {
            let request = VolumeCreateRequest {
                name: Some(text(args, "name")?.to_string()),
                ..Default::default()
            };
            let volume = docker.create_volume(request).await.map_err(engine)?;
            format!("created volume {}", volume.name)
        }
        Op::RemoveVolume => {
            let name = text(args, "name")?;
            let options = RemoveVolumeOptionsBuilder::new().build();
            docker.remove_volume(name, Some(options)).await.map_err(engine)?;
            format!("removed volume {name}")
        }
        Op::ListNetworks => {
            let found = docker.list_networks(None).await.map_err(engine)?;
            listed(&found, &["Id", "Name", "Driver", "Scope"])
        }
        Op::CreateNetwork => {
            let request = NetworkCreateRequest {
                name: text(args, "name")?.to_string(),
                ..Default::default()
            };
            let network = docker.create_network(request).await.map_err(engine)?;
            format!("created network {}", network.id)
        }
        Op::RemoveNetwork => {
            let name = text(args, "name")?;
            docker.remove_network(name).await.map_err(engine)?;
            format!("removed network {name}")
        }
    })
}

/// The last lines a container wrote, both streams, capped for the model.
async fn logs(docker: &Docker, container: &str) -> Result<String, String> {
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(LOG_LINES)
        .build();
    let mut stream = docker.logs(container, Some(options));
    let mut out = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() < MAX_OUTPUT {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    Ok(cap_output(out))
}

/// Creates and starts a container; unless `wait` is false, waits for it (within the call's
/// timeout), answers its exit code and logs, and removes it.
async fn run_container(docker: &Docker, args: &Value, execution: Uuid) -> Result<String, String> {
    let engine = |e: bollard::errors::Error| e.to_string();
    let image = text(args, "image")?;
    let command: Option<Vec<String>> = args["command"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    let env: Option<Vec<String>> = args["env"].as_object().map(|o| {
        o.iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v.as_str()?)))
            .collect()
    });
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: command,
        env,
        // Which run started it, for whoever finds it later.
        labels: Some(HashMap::from([(
            "kubiya-cp.execution".to_string(),
            execution.to_string(),
        )])),
        // No privilege gained through setuid binaries, an init reaping zombies, a bound on
        // processes (a fork bomb stays inside).
        host_config: Some(HostConfig {
            security_opt: Some(vec!["no-new-privileges".into()]),
            init: Some(true),
            pids_limit: Some(1024),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = args["name"]
        .as_str()
        .map(|n| CreateContainerOptionsBuilder::new().name(n).build());
    let created = docker.create_container(options, body).await.map_err(engine)?;
    let id = created.id;
    docker.start_container(&id, None).await.map_err(engine)?;
    if !args["wait"].as_bool().unwrap_or(true) {
        return Ok(json!({"id": id, "status": "started"}).to_string());
    }
    let wait = Duration::from_secs(
        args["timeout_seconds"]
            .as_u64()
            .unwrap_or(RUN_WAIT)
            .clamp(1, MAX_RUN_WAIT),
    );
    let mut waiting = docker.wait_container(&id, None);
    let ended = tokio::time::timeout(wait, waiting.next()).await;
    let exit_code = match ended {
        Err(_) => {
            return Err(format!(
                "container {id} still runs after {} s (it was left running)",
                wait.as_secs()
            ));
        }
        Ok(Some(Ok(r))) => r.status_code,
        // A non-zero exit comes back as an error that carries the code.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(e.to_string()),
        Ok(None) => -1,
    };
    let output = logs(docker, &id).await.unwrap_or_default();
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    let _ = docker.remove_container(&id, Some(options)).await;
    let answer = json!({"id": id, "exit_code": exit_code, "output": output}).to_string();
    if exit_code == 0 { Ok(answer) } else { Err(answer) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_tool_has_an_op() {
        for doc in cp_types::skill::tools_of(cp_types::skill::SkillType::Docker) {
            let op = Op::of_tool(doc.name).unwrap_or_else(|| panic!("{}", doc.name));
            assert_eq!(op.parameters()["type"], "object");
        }
        assert_eq!(Op::of_tool("docker_fly"), None);
    }

    /// Against the engine of this host when there is one; without, every call says so.
    #[tokio::test]
    async fn containers_run_on_a_real_engine_or_the_call_says_there_is_none() {
        if engine().await.is_err() {
            let (answer, failed) = run(Op::ListContainers, &json!({}), Uuid::nil()).await;
            assert!(failed && answer.contains("Docker engine"), "{answer}");
            eprintln!("skipped the container part: no Docker engine on this host ({answer})");
            return;
        }
        let (answer, failed) = run(Op::PullImage, &json!({"image": "alpine:3.20"}), Uuid::nil()).await;
        assert!(!failed, "{answer}");
        let args = json!({"image": "alpine:3.20", "command": ["sh", "-c", "echo hello $WHO; exit 3"], "env": {"WHO": "docker"}});
        let (answer, failed) = run(Op::RunContainer, &args, Uuid::nil()).await;
        assert!(failed, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            (answer["exit_code"].as_i64(), answer["output"].as_str()),
            (Some(3), Some("hello docker\n"))
        );
    }
}
