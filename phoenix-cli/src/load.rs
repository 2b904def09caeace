//! Reading a configuration directory from disk into sources for `phoenix-core`.
//!
//! Every file goes through [`crate::files::read_text`]: regular files only, of bounded size, UTF-8.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, WrapErr};
use phoenix_core::config::hypervisor::DEFAULT_GATEWAY_TEMPLATE;
use phoenix_core::config::stacks::StacksFile;
use phoenix_core::lint::checks::compose::ComposeFile;
use phoenix_core::lint::checks::gateway::GatewayTemplate;
use phoenix_core::{CheckOptions, FileKind, Problem, SourceFile};

use crate::files::{self, CONFIG_LIMIT, Links, SCRIPT_LIMIT};

/// The files of a configuration directory, and what the directory adds to the feature catalogue.
pub(crate) struct ConfigDir {
    pub(crate) sources: Vec<SourceFile>,
    pub(crate) options: CheckOptions,
}

/// A configuration directory that did not validate: the error of a command that needs a valid one.
/// It carries the problems, so that the human and JSON renderings can show every one of them.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) dir: PathBuf,
    pub(crate) problems: Vec<Problem>,
    pub(crate) sources: Vec<SourceFile>,
    /// What did not happen because of it: `nothing was planned`.
    pub(crate) consequence: &'static str,
}

/// Reads every configuration file that exists in `dir`; missing files are left for validation to report.
/// A file that is there but cannot be read as text (not a regular file, a dangling link, too large, not
/// UTF-8) is an error naming it, also for the optional stacks file.
pub(crate) fn read(dir: &Path) -> miette::Result<ConfigDir> {
    files::ensure_directory(dir, "configuration directory")?;
    let mut sources = Vec::new();
    for kind in FileKind::ALL {
        let path = dir.join(kind.file_name());
        if let Some(text) = files::read_text(&path, CONFIG_LIMIT, Links::Follow)? {
            sources.push(SourceFile::new(kind, path.display().to_string(), text));
        }
    }
    let extra_features = scripts(&dir.join("features"), true)?.into_keys().collect();
    let apparmor_files = scripts(&dir.join("apparmor"), false)?;
    let compose_files = Some(compose_files(dir, &sources)?);
    let gateway_template = gateway_template(dir, &sources)?;
    Ok(ConfigDir {
        sources,
        options: CheckOptions {
            extra_features,
            apparmor_files,
            compose_files,
            gateway_template,
        },
    })
}

/// The gateway's template, when the hypervisor file declares a gateway (`gateway.template`, else the
/// default path); a file that is not yet valid JSON yields none, for validation to report.
fn gateway_template(dir: &Path, sources: &[SourceFile]) -> miette::Result<Option<GatewayTemplate>> {
    let Some(hypervisor) = sources
        .iter()
        .find(|source| source.kind() == FileKind::Hypervisor)
    else {
        return Ok(None);
    };
    let Ok(document) = serde_json::from_str::<serde_json::Value>(hypervisor.text()) else {
        return Ok(None);
    };
    let Some(gateway) = document.get("gateway") else {
        return Ok(None);
    };
    let relative = gateway
        .get("template")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(DEFAULT_GATEWAY_TEMPLATE);
    let path = dir.join(relative);
    Ok(Some(GatewayTemplate {
        path: path.display().to_string(),
        text: files::read_text(&path, CONFIG_LIMIT, Links::Follow)?,
    }))
}

/// The compose file of each stack the stacks file declares, where Phoenix looks for it
/// (`Stack::compose_candidates`); a stacks file that is not yet valid yields none, for validation to report.
fn compose_files(
    dir: &Path,
    sources: &[SourceFile],
) -> miette::Result<BTreeMap<String, Option<ComposeFile>>> {
    let mut found = BTreeMap::new();
    let Some(stacks) = sources.iter().find(|source| source.kind() == FileKind::Stacks) else {
        return Ok(found);
    };
    let Ok(stacks) = serde_json::from_str::<StacksFile>(stacks.text()) else {
        return Ok(found);
    };
    for (name, stack) in &stacks.docker_stacks {
        if stack.git.is_some() {
            // Its compose file is in its repository, which Portainer reads, not Phoenix.
            continue;
        }
        let mut file = None;
        for path in stack.compose_candidates(name, dir) {
            if let Some(text) = files::read_text(&path, CONFIG_LIMIT, Links::Follow)? {
                let stack_dir = path.parent();
                let mut missing_files = Vec::new();
                for (environment, settings) in &stack.environments {
                    for (index, file) in settings.files.iter().enumerate() {
                        let candidates = file.source_candidates(dir, stack_dir);
                        if !candidates.iter().any(|candidate| candidate.is_file()) {
                            let tried = candidates.iter().map(|path| path.display().to_string()).collect();
                            missing_files.push((environment.clone(), index, tried));
                        }
                    }
                }
                file = Some(ComposeFile {
                    path: path.display().to_string(),
                    text,
                    missing_files,
                });
                break;
            }
        }
        found.insert(name.clone(), file);
    }
    Ok(found)
}

/// The user's own scripts in a folder of the configuration directory (`features/*.sh`, `scripts/*`), by
/// name; a missing folder holds none. Feature names drop the `.sh`; application scripts keep their name.
/// Subdirectories are passed over; any other entry that is not a regular file is an error.
pub(crate) fn scripts(dir: &Path, strip_sh: bool) -> miette::Result<BTreeMap<String, String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => {
            return Err(error)
                .into_diagnostic()
                .wrap_err_with(|| format!("failed to read the scripts in {}", dir.display()));
        }
    };
    let mut found = BTreeMap::new();
    for entry in entries {
        let path = entry
            .into_diagnostic()
            .wrap_err_with(|| format!("failed to read the scripts in {}", dir.display()))?
            .path();
        let is_script = !strip_sh || path.extension().is_some_and(|extension| extension == "sh");
        let name = if strip_sh {
            path.file_stem()
        } else {
            path.file_name()
        };
        if !is_script || path.is_dir() {
            continue;
        }
        let Some(name) = name.and_then(|name| name.to_str()) else {
            continue;
        };
        if let Some(text) = files::read_text(&path, SCRIPT_LIMIT, Links::Follow)? {
            found.insert(name.to_owned(), text);
        }
    }
    Ok(found)
}

/// Reads and validates a configuration directory for the commands that act on it. Warnings are counted on
/// standard error; a directory with errors is an [`Invalid`] error.
pub(crate) fn estate(dir: &Path) -> miette::Result<phoenix_core::Estate> {
    validated(dir, read(dir)?, "nothing was planned")
}

/// Validates the files of `dir` as read (or as a command is about to write them), counting warnings on
/// standard error; files with errors are an [`Invalid`] error that says `consequence`.
pub(crate) fn validated(
    dir: &Path,
    config: ConfigDir,
    consequence: &'static str,
) -> miette::Result<phoenix_core::Estate> {
    // Sources share their text, so keeping them for the renderer copies no file.
    let sources = config.sources.clone();
    let validation = phoenix_core::validate(config.sources, &config.options);
    let warnings = validation.count(phoenix_core::Severity::Warning);
    match validation.into_estate() {
        Ok(estate) => {
            if warnings > 0 {
                eprintln!(
                    "{} has {warnings} warning{}; `phoenix validate` shows them.",
                    dir.display(),
                    if warnings == 1 { "" } else { "s" }
                );
            }
            Ok(estate)
        }
        Err(problems) => Err(miette::Report::new(Invalid {
            dir: dir.to_path_buf(),
            problems,
            sources,
            consequence,
        })),
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not valid; {}", self.dir.display(), self.consequence)
    }
}

impl std::error::Error for Invalid {}

impl miette::Diagnostic for Invalid {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("phoenix::config::not_valid"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("`phoenix validate` lists the problems"))
    }
}
