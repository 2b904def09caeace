//! Reading a configuration directory from disk into sources for `phoenix-core`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use miette::{IntoDiagnostic, WrapErr};
use phoenix_core::{CheckOptions, FileKind, SourceFile};

/// The files of a configuration directory, and what the directory adds to the feature catalogue.
pub(crate) struct ConfigDir {
    pub(crate) sources: Vec<SourceFile>,
    pub(crate) options: CheckOptions,
}

/// Reads every configuration file that exists in `dir`; missing files are left for validation to report.
pub(crate) fn read(dir: &Path) -> miette::Result<ConfigDir> {
    if !dir.is_dir() {
        return Err(miette::miette!(
            code = "phoenix::config::no_directory",
            help = "pass --config DIR or set PHOENIX_CONFIG_DIR",
            "configuration directory {} does not exist",
            dir.display()
        ));
    }
    let mut sources = Vec::new();
    for kind in FileKind::ALL {
        let path = dir.join(kind.file_name());
        match fs::read_to_string(&path) {
            Ok(text) => sources.push(SourceFile::new(kind, path.display().to_string(), text)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("failed to read {}", path.display()));
            }
        }
    }
    let extra_features = scripts(&dir.join("features"), true)?.into_keys().collect();
    Ok(ConfigDir {
        sources,
        options: CheckOptions { extra_features },
    })
}

/// The user's own scripts in a folder of the configuration directory (`features/*.sh`, `scripts/*`), by
/// name; a missing folder holds none. Feature names drop the `.sh`; application scripts keep their name.
pub(crate) fn scripts(dir: &Path, strip_sh: bool) -> miette::Result<BTreeMap<String, String>> {
    let read = || -> io::Result<BTreeMap<String, String>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(error) => return Err(error),
        };
        let mut found = BTreeMap::new();
        for entry in entries {
            let path = entry?.path();
            let is_script = !strip_sh || path.extension().is_some_and(|extension| extension == "sh");
            let name = if strip_sh {
                path.file_stem()
            } else {
                path.file_name()
            };
            if path.is_file()
                && is_script
                && let Some(name) = name.and_then(|name| name.to_str())
            {
                found.insert(name.to_owned(), fs::read_to_string(&path)?);
            }
        }
        Ok(found)
    };
    read()
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to read the scripts in {}", dir.display()))
}

/// Reads and validates a configuration directory for the commands that act on it. Problems are printed;
/// `None` means there were errors (the caller exits with status 1).
pub(crate) fn estate(dir: &Path) -> miette::Result<Option<phoenix_core::Estate>> {
    let config = read(dir)?;
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
            Ok(Some(estate))
        }
        Err(problems) => {
            eprint!(
                "{}",
                crate::render::human(&problems, crate::render::stderr_is_terminal())
            );
            eprintln!("{} is not valid; nothing was planned.", dir.display());
            Ok(None)
        }
    }
}
