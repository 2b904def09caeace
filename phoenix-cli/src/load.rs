//! Reading a configuration directory from disk into sources for `phoenix-core`.

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
    let extra_features = user_features(&dir.join("features"))
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to list {}", dir.join("features").display()))?;
    Ok(ConfigDir {
        sources,
        options: CheckOptions { extra_features },
    })
}

/// Names of the user's own features: `features/<name>.sh` in the configuration directory.
fn user_features(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut names = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "sh")
            && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
