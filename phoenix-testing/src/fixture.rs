//! Configuration directories read into sources, estates and resources, as `phoenix` reads them.
//!
//! Each source is named by its path, so a problem names the file it sits in.

use std::path::Path;

use phoenix_core::{CheckOptions, Estate, FileKind, Resource, SourceFile, resources as resources_of};

/// The configuration files that are in `dir`; a missing one is left out, for validation to report when it is
/// required.
pub fn sources(dir: &Path) -> Vec<SourceFile> {
    FileKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let path = dir.join(kind.file_name());
            let text = std::fs::read_to_string(&path).ok()?;
            Some(SourceFile::new(kind, path.display().to_string(), text))
        })
        .collect()
}

/// Every configuration file of a fixture that holds one of each kind; a missing file fails the test.
pub fn every_source(dir: &Path) -> Vec<SourceFile> {
    every_source_edited(dir, |_, text| Some(text))
}

/// [`every_source`], each file's text passed through `edit`, which returns the text to validate, or `None`
/// to leave the file out.
pub fn every_source_edited(
    dir: &Path,
    mut edit: impl FnMut(FileKind, String) -> Option<String>,
) -> Vec<SourceFile> {
    FileKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let path = dir.join(kind.file_name());
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("fixture file {}: {error}", path.display()));
            let text = edit(kind, text)?;
            Some(SourceFile::new(kind, path.display().to_string(), text))
        })
        .collect()
}

/// The estate of valid sources; a problem that is an error fails the test, listing the problems.
#[track_caller]
pub fn estate(sources: Vec<SourceFile>, options: &CheckOptions) -> Estate {
    phoenix_core::validate(sources, options)
        .into_estate()
        .expect("the fixture is valid")
}

/// The resources of valid sources, as [`estate`] reads them.
#[track_caller]
pub fn resources(sources: Vec<SourceFile>, options: &CheckOptions) -> Vec<Resource> {
    resources_of(&estate(sources, options))
}

/// Writes an estate of containers (`lxc_configs`, by CTID) and no VMs into `dir` beside `hypervisor`, as the
/// three required files, made if missing.
pub fn write_containers(
    dir: &Path,
    hypervisor: &serde_json::Value,
    containers: serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let files = [
        (FileKind::Hypervisor, hypervisor.clone()),
        (FileKind::Lxc, serde_json::json!({ "lxc_configs": containers })),
        (FileKind::Vm, serde_json::json!({ "vms": [] })),
    ];
    for (kind, document) in files {
        let text = serde_json::to_string_pretty(&document).expect("JSON serialises");
        std::fs::write(dir.join(kind.file_name()), text)
            .map_err(|error| format!("{}: {error}", kind.file_name()))?;
    }
    Ok(())
}
