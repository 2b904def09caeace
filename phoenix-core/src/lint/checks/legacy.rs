//! Warnings for keys of the earlier bash version that Phoenix reads but does not use, and for inline secrets.

use crate::config::{ConfigFiles, FileKind, Secret};
use crate::lint::diagnostic::Problem;
use crate::lint::schema::escape_pointer_token;

/// Variable names that suggest a value is sensitive.
const SENSITIVE_NAMES: &[&str] = &["PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL"];

/// Whether a variable of this name likely holds a secret.
pub fn is_sensitive_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SENSITIVE_NAMES.iter().any(|marker| upper.contains(marker))
}

pub(crate) fn check(files: &ConfigFiles, problems: &mut Vec<Problem>) {
    let hypervisor = &files.hypervisor;
    let ignored = [
        (
            "/core_paths",
            hypervisor.core_paths.is_some(),
            "Phoenix finds its files through `--config`",
        ),
        (
            "/tests",
            hypervisor.tests.is_some(),
            "use `health_check` on guests",
        ),
        (
            "/behavior",
            hypervisor.behavior.is_some(),
            "delete it: these switches have no effect in Phoenix",
        ),
    ];
    for (pointer, present, instead) in ignored {
        if present {
            problems.push(legacy(FileKind::Hypervisor, pointer, "is ignored", instead));
        }
    }
    if let Some(defaults) = &hypervisor.proxmox_defaults {
        if defaults.zfs_lxc_pool.is_some() {
            let instead = "set `storage_pool` in `proxmox_defaults.lxc` or on each container";
            problems.push(legacy(
                FileKind::Hypervisor,
                "/proxmox_defaults/zfs_lxc_pool",
                "is ignored",
                instead,
            ));
        }
        if let Some(lxc) = &defaults.lxc {
            let keys = [
                (
                    "network_config",
                    lxc.network_config.is_some(),
                    "set `network_config` on each container",
                ),
                (
                    "security",
                    lxc.security.is_some(),
                    "set `apparmor_profile` on containers",
                ),
                (
                    "nesting",
                    lxc.nesting.is_some(),
                    "write `\"features\": \"nesting=1\"`",
                ),
            ];
            for (key, present, instead) in keys {
                if present {
                    let pointer = format!("/proxmox_defaults/lxc/{key}");
                    problems.push(legacy(FileKind::Hypervisor, &pointer, "is ignored", instead));
                }
            }
        }
    }
    if hypervisor.shared_volumes.legacy_firewall.is_some() {
        let (outcome, instead) = if hypervisor.firewall.is_some() {
            (
                "is ignored because a top-level `firewall` exists",
                "delete the copy under `shared_volumes`",
            )
        } else {
            (
                "is read as the host firewall",
                "move it to the top-level `firewall` key",
            )
        };
        problems.push(legacy(
            FileKind::Hypervisor,
            "/shared_volumes/firewall",
            outcome,
            instead,
        ));
    }
    if let Some(portainer) = &hypervisor.portainer_api {
        plaintext(
            FileKind::Hypervisor,
            "/portainer_api/admin_password",
            &portainer.admin_password,
            problems,
        );
    }

    for (ctid, container) in &files.lxc.lxc_configs {
        let base = format!("/lxc_configs/{}", escape_pointer_token(ctid));
        if container.health_checks.is_some() {
            let pointer = format!("{base}/health_checks");
            problems.push(legacy(
                FileKind::Lxc,
                &pointer,
                "is ignored",
                "use the singular `health_check`",
            ));
        }
        if container.tests.is_some() {
            let pointer = format!("{base}/tests");
            problems.push(legacy(
                FileKind::Lxc,
                &pointer,
                "is ignored",
                "use `health_check`",
            ));
        }
        if let Some(template) = &container.template
            && template.starts_with('/')
        {
            problems.push(
                Problem::warning(
                    "phoenix::config::template_path",
                    FileKind::Lxc,
                    format!("{base}/template"),
                    "the template is a host path, not a Proxmox volume id",
                )
                .with_label("host path")
                .with_help("Phoenix looks the file name up on the template storage; write `storage:vztmpl/<file>` to be exact"),
            );
        }
    }

    if let Some(key) = files
        .hypervisor
        .public_dns
        .as_ref()
        .and_then(|public| public.server.as_ref()?.tsig.as_ref())
    {
        plaintext(
            FileKind::Hypervisor,
            "/public_dns/server/tsig/secret",
            &key.secret,
            problems,
        );
    }

    if files.vm.vm_defaults.template.is_some() {
        let instead = "VMs name their source with `clone_from_vmid` or `template_image`";
        problems.push(legacy(
            FileKind::Vm,
            "/vm_defaults/template",
            "is ignored",
            instead,
        ));
    }
    for (index, vm) in files.vm.vms.iter().enumerate() {
        if let Some(password) = vm.user_config.as_ref().and_then(|user| user.password.as_ref()) {
            plaintext(
                FileKind::Vm,
                &format!("/vms/{index}/user_config/password"),
                password,
                problems,
            );
        }
    }

    for (name, stack) in &files.stacks.docker_stacks {
        if let Some(password) = stack.git.as_ref().and_then(|git| git.password.as_ref()) {
            let pointer = format!("/docker_stacks/{}/git/password", escape_pointer_token(name));
            plaintext(FileKind::Stacks, &pointer, password, problems);
        }
        for (environment_name, environment) in &stack.environments {
            for (index, variable) in environment.variables.iter().enumerate() {
                if is_sensitive_name(&variable.name) {
                    let pointer = format!(
                        "/docker_stacks/{}/environments/{}/variables/{index}/value",
                        escape_pointer_token(name),
                        escape_pointer_token(environment_name)
                    );
                    plaintext(FileKind::Stacks, &pointer, &variable.value, problems);
                }
            }
        }
    }
}

fn legacy(file: FileKind, pointer: &str, outcome: &str, instead: &str) -> Problem {
    let key = pointer.trim_start_matches('/').replace('/', ".");
    Problem::warning(
        "phoenix::config::legacy_key",
        file,
        pointer,
        format!("`{key}` is a key of the earlier version and {outcome}"),
    )
    .on_key()
    .with_label("legacy key")
    .with_help(instead.to_owned())
}

fn plaintext(file: FileKind, pointer: &str, secret: &Secret, problems: &mut Vec<Problem>) {
    if !secret.is_plaintext() {
        return;
    }
    let key = pointer.trim_start_matches('/').replace('/', ".");
    problems.push(
        Problem::warning(
            "phoenix::config::plaintext_secret",
            file,
            pointer,
            format!("`{key}` holds a secret in plain text"),
        )
        .with_label("secret written inline")
        .with_help(
            r#"write {"env": "VARIABLE"} or {"file": "path/to/secret"} and keep the secret out of the file"#,
        ),
    );
}
