//! The containers Portainer cannot deploy itself: its server and its agents (`portainer/docker/<vmid>`),
//! run with the Docker CLI inside the VM (through the QEMU guest agent on a live target).
//!
//! What a container was run with is recorded on it, as the label `phoenix.run` holding the [`DockerRun`]
//! as JSON: observe reads it back with `docker inspect` and compares it field by field, so an unchanged
//! container is neither restarted nor recreated, and a changed one is recreated once. A container of the
//! same name without the label is not Phoenix's: replacing it is destructive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use phoenix_core::{DockerRun, ManagerError};
use phoenix_pve::guest::GuestExec;
use phoenix_pve::host::CommandOutput;
use serde_json::Value;

/// The label holding what a container was run with.
pub const RUN_LABEL: &str = "phoenix.run";
/// The value the `container` field shows for a container of the declared name that Phoenix did not run.
pub const FOREIGN: &str = "(not run by Phoenix)";

/// How long one Docker command may take; a pull of a large image is the slowest.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Commands inside a VM, by VM ID and node.
pub type DockerHosts = Arc<dyn Fn(u32, Option<&str>) -> Arc<dyn GuestExec> + Send + Sync>;

/// The live fields of `run`'s container, as [`DockerRun::fields`] names them; `None` when there is no
/// container of its name (or no Docker to ask yet: the VM may be created in the same run).
pub async fn observe(guest: &dyn GuestExec, run: &DockerRun) -> Option<BTreeMap<String, Value>> {
    let format = format!("{{{{index .Config.Labels \"{RUN_LABEL}\"}}}}\n{{{{.State.Running}}}}");
    let output = docker(
        guest,
        &[
            "inspect",
            "--type",
            "container",
            "--format",
            &format,
            &run.container,
        ],
    )
    .await
    .ok()?;
    if !output.success() {
        tracing::debug!(guest = guest.describe(), stderr = %output.stderr.trim(), "no container");
        return None;
    }
    let mut lines = output.stdout.lines();
    let label = lines.next().unwrap_or_default().trim();
    let running = match lines.next().map(str::trim) {
        Some("true") => true,
        Some("false") => false,
        _ => {
            tracing::debug!(guest = guest.describe(), stdout = %output.stdout, "not docker inspect's answer");
            return None;
        }
    };
    let mut fields = match serde_json::from_str::<DockerRun>(label) {
        Ok(recorded) => recorded.fields(),
        Err(_) => BTreeMap::from([(
            "container".to_owned(),
            Value::String(format!("{} {FOREIGN}", run.container)),
        )]),
    };
    fields.insert("running".to_owned(), Value::Bool(running));
    Some(fields)
}

/// Converges `run`'s container: started when only stopped, recreated when it was run otherwise (a
/// foreign one only when `replace_foreign`), left alone when it matches.
pub async fn apply(
    guest: &dyn GuestExec,
    run: &DockerRun,
    replace_foreign: bool,
) -> Result<(), ManagerError> {
    let version = docker(guest, &["version", "--format", "{{.Server.Version}}"]).await?;
    if !version.success() {
        return Err(failed(
            guest,
            "Docker does not answer (give the VM the `docker` feature)",
            &version,
        ));
    }
    match observe(guest, run).await {
        Some(live) if live == run.fields() => return Ok(()),
        Some(mut live) => {
            let running = live.remove("running") == Some(Value::Bool(true));
            let mut stopped = live;
            stopped.insert("running".to_owned(), Value::Bool(true));
            if !running && stopped == run.fields() {
                let output = docker(guest, &["start", &run.container]).await?;
                return check(guest, "starting the container", &output);
            }
            let foreign = stopped
                .get("container")
                .and_then(Value::as_str)
                .is_some_and(|name| name.ends_with(FOREIGN));
            if foreign && !replace_foreign {
                return Err(ManagerError::failed(format!(
                    "{}: a container named {} exists that Phoenix did not run; it is left alone (--allow-destroy replaces it)",
                    guest.describe(),
                    run.container
                )));
            }
            let output = docker(guest, &["rm", "--force", &run.container]).await?;
            check(guest, "removing the old container", &output)?;
        }
        None => {}
    }
    if !image_exists(guest, &run.image).await? {
        let pulled = docker(guest, &["pull", &run.image]).await?;
        check(guest, &format!("pulling {}", run.image), &pulled)?;
    }
    let output = docker(guest, &run_arguments(run)?).await?;
    check(guest, "starting the container", &output)?;
    // Read back: what was reported started must run, as recorded.
    if observe(guest, run).await == Some(run.fields()) {
        return Ok(());
    }
    let logs = docker(guest, &["logs", "--tail", "20", &run.container]).await?;
    Err(failed(
        guest,
        &format!("{} does not run after docker run", run.container),
        &logs,
    ))
}

/// `docker run` for `run`, with the label recording it.
fn run_arguments(run: &DockerRun) -> Result<Vec<String>, ManagerError> {
    let record = serde_json::to_string(run).map_err(|error| ManagerError::failed(error.to_string()))?;
    let mut argv: Vec<String> = ["run", "--detach", "--name", &run.container, "--restart", "always"]
        .map(str::to_owned)
        .into();
    argv.push("--label".to_owned());
    argv.push(format!("{RUN_LABEL}={record}"));
    for port in &run.ports {
        argv.push("--publish".to_owned());
        argv.push(port.clone());
    }
    for volume in &run.volumes {
        argv.push("--volume".to_owned());
        argv.push(volume.clone());
    }
    argv.push(run.image.clone());
    argv.extend(run.args.iter().cloned());
    Ok(argv)
}

async fn docker<S: AsRef<str>>(guest: &dyn GuestExec, args: &[S]) -> Result<CommandOutput, ManagerError> {
    let mut argv = vec!["docker".to_owned()];
    argv.extend(args.iter().map(|arg| arg.as_ref().to_owned()));
    guest.exec(&argv, None, &BTreeMap::new(), DOCKER_TIMEOUT).await
}

/// Whether the VM's Docker has `image` (a name and tag, or an ID).
pub(crate) async fn image_exists(guest: &dyn GuestExec, image: &str) -> Result<bool, ManagerError> {
    Ok(docker(guest, &["image", "inspect", "--format", "{{.Id}}", image])
        .await?
        .success())
}

/// `Ok` when `output` is a success, else [`failed`].
pub(crate) fn check(guest: &dyn GuestExec, doing: &str, output: &CommandOutput) -> Result<(), ManagerError> {
    if output.success() {
        Ok(())
    } else {
        Err(failed(guest, doing, output))
    }
}

/// What failed, in which VM, with the last 20 lines of what the command said (a build says a lot).
fn failed(guest: &dyn GuestExec, doing: &str, output: &CommandOutput) -> ManagerError {
    let said = [output.stderr.trim(), output.stdout.trim()]
        .into_iter()
        .find(|text| !text.is_empty())
        .unwrap_or("no output");
    let lines: Vec<&str> = said.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    ManagerError::failed(format!("{}: {doing}: {tail}", guest.describe()))
}

/// The label Phoenix puts on every service of a stack it deploys with Compose directly: the digest of the
/// compose file and variables it was deployed with.
pub const STACK_LABEL: &str = "phoenix.stack";

/// What a stack deployed with Compose directly holds: the digest every one of its containers carries (or
/// `mixed`), and whether all of them run; `None` when the project has no container.
pub async fn observe_stack(guest: &dyn GuestExec, name: &str) -> Option<(String, bool)> {
    let filter = format!("label=com.docker.compose.project={name}");
    let format = format!("{{{{.Label \"{STACK_LABEL}\"}}}} {{{{.State}}}}");
    let output = docker(guest, &["ps", "--all", "--filter", &filter, "--format", &format])
        .await
        .ok()
        .filter(CommandOutput::success)?;
    let mut digests = std::collections::BTreeSet::new();
    let mut running = true;
    for line in output.stdout.lines().filter(|line| !line.trim().is_empty()) {
        let (digest, state) = line.rsplit_once(' ').unwrap_or((line, ""));
        digests.insert(digest.trim().to_owned());
        running &= state.trim() == "running";
    }
    match digests.len() {
        0 => None,
        1 => digests.pop_first().map(|digest| (digest, running)),
        _ => Some(("mixed".to_owned(), running)),
    }
}

/// Deploys `content` as Compose project `name` (`docker compose`, else `docker-compose`), every service
/// labelled with `digest`, the variables in Compose's environment for `${NAME}`; reads it back.
pub async fn deploy_stack(
    guest: &dyn GuestExec,
    name: &str,
    content: &str,
    variables: &BTreeMap<String, String>,
    digest: &str,
) -> Result<(), ManagerError> {
    let labelled = labelled(content, digest)
        .map_err(|error| ManagerError::failed(format!("the compose file of stack {name}: {error}")))?;
    let plugin = docker(guest, &["compose", "version"]).await?;
    let mut argv: Vec<String> = if plugin.success() {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    };
    argv.extend(["-p", name, "-f", "-", "up", "--detach", "--remove-orphans"].map(str::to_owned));
    let output = guest
        .exec(&argv, Some(labelled.as_bytes()), variables, DOCKER_TIMEOUT)
        .await?;
    check(guest, &format!("deploying stack {name}"), &output)?;
    match observe_stack(guest, name).await {
        Some((deployed, true)) if deployed == digest => Ok(()),
        _ => Err(ManagerError::failed(format!(
            "{}: stack {name} does not run as deployed after `up` ({})",
            guest.describe(),
            output.stderr.trim()
        ))),
    }
}

/// The compose file with `STACK_LABEL=digest` on every service, as JSON (which Compose reads as YAML).
fn labelled(content: &str, digest: &str) -> Result<String, String> {
    let mut document: Value = serde_saphyr::from_str(content).map_err(|error| error.to_string())?;
    let services = document
        .get_mut("services")
        .and_then(Value::as_object_mut)
        .ok_or("it has no `services`")?;
    for (service, definition) in services.iter_mut() {
        let definition = definition
            .as_object_mut()
            .ok_or_else(|| format!("service `{service}` is not a mapping"))?;
        let labels = definition
            .entry("labels")
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        match labels {
            Value::Object(map) => {
                map.insert(STACK_LABEL.to_owned(), Value::String(digest.to_owned()));
            }
            Value::Array(list) => list.push(Value::String(format!("{STACK_LABEL}={digest}"))),
            _ => {
                return Err(format!(
                    "the labels of service `{service}` are neither a list nor a mapping"
                ));
            }
        }
    }
    serde_json::to_string(&document).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_records_itself_in_a_label_and_publishes_what_it_declares() {
        let run = DockerRun::agent("portainer/agent:lts", 9101);
        let argv = run_arguments(&run).unwrap();
        let label = argv
            .iter()
            .find_map(|arg| arg.strip_prefix("phoenix.run="))
            .expect("labelled");
        assert_eq!(serde_json::from_str::<DockerRun>(label).unwrap(), run);
        let text = argv.join(" ");
        assert!(text.contains("--publish 9101:9001"), "{text}");
        assert!(text.ends_with("portainer/agent:lts"), "{text}");
    }

    #[test]
    fn every_service_is_labelled_whatever_its_labels_look_like() {
        let content = "services:\n  a:\n    image: x\n  b:\n    image: y\n    labels: [\"k=v\"]\n  c:\n    image: z\n    labels:\n      k: v\n";
        let json: Value = serde_json::from_str(&labelled(content, "sha256:1").unwrap()).unwrap();
        assert_eq!(json["services"]["a"]["labels"]["phoenix.stack"], "sha256:1");
        assert_eq!(json["services"]["b"]["labels"][1], "phoenix.stack=sha256:1");
        assert_eq!(json["services"]["c"]["labels"]["k"], "v");
        assert_eq!(json["services"]["c"]["labels"]["phoenix.stack"], "sha256:1");
        assert!(labelled("volumes: {}\n", "d").is_err());
    }
}
