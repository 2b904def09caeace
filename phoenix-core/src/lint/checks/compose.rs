//! The stacks' compose files, as the caller read them ([`super::CheckOptions::compose_files`]): YAML that
//! parses, with `services`; the services a stack's Traefik labels are set on exist; and the variables that
//! would reach nothing (Portainer hands a stack's variables to `docker compose` for `${NAME}` in the file,
//! and to containers only through `env_file: stack.env`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::config::FileKind;
use crate::lint::diagnostic::Problem;
use crate::lint::schema::escape_pointer_token;
use crate::lint::suggest::did_you_mean;
use crate::model::Estate;
use crate::traefik::DEFAULT_ENVIRONMENT;

/// A stack's compose file as read from the configuration directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeFile {
    /// Where it was found, for messages.
    pub path: String,
    /// Its text.
    pub text: String,
    /// The `files` whose source is nowhere Phoenix looks (`StackFile::source_candidates`): their
    /// environment, index, and the paths tried.
    pub missing_files: Vec<(String, usize, Vec<String>)>,
}

pub(super) fn check(
    estate: &Estate,
    compose: &BTreeMap<String, Option<ComposeFile>>,
    problems: &mut Vec<Problem>,
) {
    for (name, stack) in &estate.files().stacks.docker_stacks {
        let stack_pointer = format!("/docker_stacks/{}", escape_pointer_token(name));
        let Some(found) = compose.get(name) else { continue };
        let Some(file) = found else {
            problems.push(
                Problem::error(
                    "phoenix::stack::no_compose_file",
                    FileKind::Stacks,
                    format!("{stack_pointer}/compose_file_path"),
                    format!("stack `{name}` has no compose file"),
                )
                .with_help(format!(
                    "put it at `{}`, or at `stacks/{name}/docker-compose.yml` in the configuration directory",
                    stack.compose_file_path
                )),
            );
            continue;
        };
        let document: Value = match serde_saphyr::from_str(&file.text) {
            Ok(document) => document,
            Err(error) => {
                problems.push(
                    Problem::error(
                        "phoenix::stack::compose_invalid",
                        FileKind::Stacks,
                        format!("{stack_pointer}/compose_file_path"),
                        format!("{} is not YAML: {}", file.path, first_line(&error.to_string())),
                    )
                    .with_help("fix the compose file; `docker compose config` shows the same error"),
                );
                continue;
            }
        };
        let Some(services) = document.get("services").and_then(Value::as_object) else {
            problems.push(
                Problem::error(
                    "phoenix::stack::compose_invalid",
                    FileKind::Stacks,
                    format!("{stack_pointer}/compose_file_path"),
                    format!("{} has no `services`", file.path),
                )
                .with_help("a compose file lists its containers under `services:`"),
            );
            continue;
        };
        for environment_name in used_environments(estate, name) {
            let Some(environment) = stack.environments.get(&environment_name) else {
                continue;
            };
            let environment_pointer = format!(
                "{stack_pointer}/environments/{}",
                escape_pointer_token(&environment_name)
            );
            for (of, index, tried) in &file.missing_files {
                if *of != environment_name {
                    continue;
                }
                let Some(declared) = environment.files.get(*index) else {
                    continue;
                };
                problems.push(
                    Problem::error(
                        "phoenix::stack::file_missing",
                        FileKind::Stacks,
                        format!("{environment_pointer}/files/{index}/source"),
                        format!("file `{}` of stack `{name}` is not there", declared.source),
                    )
                    .with_help(format!("Phoenix looked at {}", tried.join(", "))),
                );
            }
            for (index, declared) in environment.files.iter().enumerate() {
                if !declared.destination_in_container.starts_with('/') {
                    problems.push(
                        Problem::error(
                            "phoenix::stack::file_destination",
                            FileKind::Stacks,
                            format!("{environment_pointer}/files/{index}/destination_in_container"),
                            format!(
                                "`{}` is not an absolute path in the container",
                                declared.destination_in_container
                            ),
                        )
                        .with_help("start it with `/`, e.g. `/app/.env`"),
                    );
                }
            }
            for service in environment.services.keys() {
                if services.contains_key(service) {
                    continue;
                }
                let problem = Problem::error(
                    "phoenix::stack::unknown_service",
                    FileKind::Stacks,
                    format!("{environment_pointer}/services/{}", escape_pointer_token(service)),
                    format!("{} has no service `{service}`", file.path),
                )
                .on_key();
                problems.push(match did_you_mean(service, services.keys().map(String::as_str)) {
                    Some(suggestion) => problem.with_help(format!("did you mean `{suggestion}`?")),
                    None => problem.with_help(format!(
                        "its services are {}",
                        services
                            .keys()
                            .map(|name| format!("`{name}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                });
            }
            let uses_stack_env = services.values().any(|service| match service.get("env_file") {
                Some(Value::String(file)) => file == "stack.env",
                Some(Value::Array(files)) => files.iter().any(|file| {
                    file.as_str() == Some("stack.env")
                        || file.get("path").and_then(Value::as_str) == Some("stack.env")
                }),
                _ => false,
            });
            let referenced = interpolated(&file.text);
            for (index, variable) in environment.variables.iter().enumerate() {
                if uses_stack_env || referenced.contains(variable.name.as_str()) {
                    continue;
                }
                problems.push(
                Problem::warning(
                    "phoenix::stack::variable_unused",
                    FileKind::Stacks,
                    format!("{environment_pointer}/variables/{index}/name"),
                    format!(
                        "`{}` reaches nothing: {} neither uses `${{{}}}` nor gives its services `env_file: stack.env`",
                        variable.name, file.path, variable.name
                    ),
                )
                .with_help(
                    "Portainer passes a stack's variables to containers only through `env_file: stack.env` \
                     (portainer#5813): add it to the services that need them, or use `${NAME}` in the file",
                ),
            );
            }
        }
    }
}

/// The environments of stack `name` that VMs run it with (`production` when no VM runs it).
fn used_environments(estate: &Estate, name: &str) -> BTreeSet<String> {
    let mut used: BTreeSet<String> = estate
        .guests()
        .values()
        .filter_map(|guest| match &guest.spec {
            crate::model::GuestSpec::Vm(vm) => Some(&vm.docker_stacks),
            crate::model::GuestSpec::Container(_) => None,
        })
        .flatten()
        .filter(|chosen| chosen.name() == name)
        .map(|chosen| chosen.environment().to_owned())
        .collect();
    if used.is_empty() {
        used.insert(DEFAULT_ENVIRONMENT.to_owned());
    }
    used
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// The variable names a compose file interpolates: `${NAME...}` and `$NAME` (but not `$$`, an escaped
/// dollar).
fn interpolated(text: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'$' {
            index += 1;
            continue;
        }
        match bytes.get(index + 1) {
            Some(b'$') => index += 2,
            Some(b'{') => {
                let start = index + 2;
                let end = name_end(bytes, start);
                names.insert(&text[start..end]);
                index = end;
            }
            Some(_) => {
                let start = index + 1;
                let end = name_end(bytes, start);
                names.insert(&text[start..end]);
                index = end.max(start);
            }
            None => index += 1,
        }
    }
    names.remove("");
    names
}

fn name_end(bytes: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::interpolated;

    #[test]
    fn interpolation_is_found_but_not_escaped_dollars() {
        let names = interpolated("a: ${ONE}\nb: \"${TWO:-x}:$THREE\"\nc: $$FOUR ${}\n");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["ONE", "THREE", "TWO"]);
    }
}
