//! Test scaffolding shared by every crate's tests: a fakepve server per test ([`FakePve`]), the fixture
//! loader ([`fixture`]), the harness of the manager tests against fakepve ([`Harness`]), in-memory fake
//! managers of every kind ([`Fakes`]), data-driven diff helpers ([`diff`]), a real Debian node reached over
//! SSH ([`TestNode`]), busybox LXC containers ([`lxc`]), a real Traefik ([`traefik`]) and the reference configuration of the earlier version ([`reference_dir`]).
//!
//! It is a dev-dependency of the crates' integration tests and never a dependency of a library; unit tests
//! inside a crate's `src/` do not use it (for phoenix-core they would see two copies of its types).
//!
//! Whatever a test needs from outside the workspace (fakepve, the reference configuration) follows one
//! policy ([`unavailable`]): where it is missing on a developer machine the test is skipped with a loud
//! `SKIPPED:` note, but under `CI=true`, where CI provides it, a missing piece is a failure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use phoenix_core::{
    Address, ExecuteOptions, Managers, Outcome, Plan, PlanOptions, Report, Resource, StopHandle,
};
pub use phoenix_pve::install_crypto_provider;

pub mod diff;
pub mod docker;
pub mod fakepve;
mod fakes;
pub mod fixture;
pub mod gpu;
mod harness;
pub mod knot;
pub mod lxc;
pub mod node;
pub mod pebble;
pub mod portainer;
pub mod traefik;

pub use fakepve::FakePve;
pub use fakes::Fakes;
pub use harness::Harness;
pub use node::TestNode;

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("phoenix-testing sits in the workspace")
        .to_path_buf()
}

/// Says that something a test needs is missing: a failure under `CI=true` (CI installs everything, so a
/// skip there would be a silent pass), elsewhere a loud `SKIPPED:` note on standard error, after which the
/// test returns early.
#[track_caller]
pub fn unavailable(message: &str) {
    if let Err(failure) = skip_unless_ci(&|name| std::env::var_os(name), message) {
        panic!("{failure}");
    }
}

/// [`unavailable`] with the environment as a parameter: `Err(message)` under `CI=true`, otherwise the note
/// is printed and `Ok`.
fn skip_unless_ci(var: &dyn Fn(&str) -> Option<OsString>, message: &str) -> Result<(), String> {
    if var("CI").is_some_and(|value| value == "true") {
        return Err(format!("{message} (CI=true, where it must be there)"));
    }
    eprintln!("SKIPPED: {message}");
    Ok(())
}

/// The earlier version's configuration: `$PHOENIX_REFERENCE_DIR/original/etc`, else
/// `../shared/reference/original/etc` beside the workspace. `None` when it is not there (a checkout on its
/// own), after a `SKIPPED:` note; under `CI=true`, where it is always there, a missing one fails the test.
#[track_caller]
pub fn reference_dir() -> Option<PathBuf> {
    match reference_dir_in(&|name| std::env::var_os(name), &workspace()) {
        Ok(dir) => dir,
        Err(failure) => panic!("{failure}"),
    }
}

/// [`reference_dir`] with the environment and the workspace as parameters; `Err` is the failure under CI.
fn reference_dir_in(
    var: &dyn Fn(&str) -> Option<OsString>,
    workspace: &Path,
) -> Result<Option<PathBuf>, String> {
    let root = var("PHOENIX_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("../shared/reference"));
    let dir = root.join("original/etc");
    if dir.is_dir() {
        return Ok(Some(dir));
    }
    let message = format!(
        "no reference configuration at {}: set PHOENIX_REFERENCE_DIR to the directory holding original/etc",
        dir.display()
    );
    skip_unless_ci(var, &message).map(|()| None)
}

/// Plans `resources` against `managers`; a plan that cannot start fails the test.
pub async fn plan(resources: Vec<Resource>, managers: &Managers, options: &PlanOptions) -> Plan {
    phoenix_core::plan(resources, managers, options)
        .await
        .expect("plans")
}

/// How the resource at `address` ended in `report`; a resource missing from the report fails the test.
pub fn outcome<'a>(report: &'a Report, address: &str) -> &'a Outcome {
    let address: Address = address.parse().expect("an address");
    &report
        .resources
        .iter()
        .find(|line| line.address == address)
        .unwrap_or_else(|| panic!("{address} in {report:#?}"))
        .outcome
}

/// The action of every change of `plan`, in plan order.
pub fn actions(plan: &Plan) -> Vec<phoenix_core::Action> {
    plan.entries()
        .iter()
        .flat_map(|entry| entry.changes.iter().map(|change| change.action))
        .collect()
}

/// The fields the changes of the resource at `address` touch, in plan order.
pub fn changed_fields(plan: &Plan, address: &str) -> Vec<String> {
    plan.entries()
        .iter()
        .filter(|entry| entry.address.to_string() == address)
        .flat_map(|entry| entry.shown_changes().into_owned())
        .flat_map(|change| change.fields.into_iter().map(|field| field.field))
        .collect()
}

/// Fails the test, listing the entries that would change, unless `plan` changes nothing.
#[track_caller]
pub fn assert_unchanged(plan: &Plan) {
    let changed: Vec<_> = plan
        .entries()
        .iter()
        .filter(|entry| !entry.is_unchanged())
        .collect();
    assert!(changed.is_empty(), "the plan changes: {changed:#?}");
}

/// Runs a plan to its end, with nobody asking it to stop; a run that cannot start fails the test.
pub async fn apply(plan: &Plan, managers: &Managers, options: &ExecuteOptions) -> Report {
    let (_handle, signal) = StopHandle::new();
    phoenix_core::execute(plan, managers, options, signal, None)
        .await
        .expect("the run starts")
}

/// Copies the directory `from` to `to`, recursively (a configuration directory a test then edits).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creates the copy");
    for entry in std::fs::read_dir(from).expect("reads the directory") {
        let path = entry.expect("an entry").path();
        let target = to.join(path.file_name().expect("a name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copies a file");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::path::Path;

    use super::{reference_dir_in, skip_unless_ci};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: BTreeMap<String, OsString> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), OsString::from(value)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_missing_piece_fails_only_under_ci() {
        assert_eq!(skip_unless_ci(&env(&[]), "gone"), Ok(()));
        assert_eq!(skip_unless_ci(&env(&[("CI", "false")]), "gone"), Ok(()));
        let failure = skip_unless_ci(&env(&[("CI", "true")]), "gone").expect_err("fails under CI");
        assert!(failure.starts_with("gone"), "{failure}");
    }

    #[test]
    fn a_missing_reference_is_skipped_but_fails_under_ci() {
        let missing = [("PHOENIX_REFERENCE_DIR", "/nonexistent/reference")];
        assert_eq!(reference_dir_in(&env(&missing), Path::new("/")), Ok(None));
        let failure = reference_dir_in(&env(&[missing[0], ("CI", "true")]), Path::new("/"))
            .expect_err("a missing reference fails under CI");
        assert!(
            failure.contains("/nonexistent/reference/original/etc")
                && failure.contains("PHOENIX_REFERENCE_DIR"),
            "{failure}"
        );
    }

    #[test]
    fn the_reference_is_found_by_the_variable_or_beside_the_workspace() {
        let root = std::env::temp_dir().join(format!("phoenix-testing-reference-{}", std::process::id()));
        let etc = root.join("shared/reference/original/etc");
        std::fs::create_dir_all(&etc).expect("creates");
        let workspace = root.join("main");
        std::fs::create_dir_all(&workspace).expect("creates");
        let ci = ("CI", "true");
        assert_eq!(
            reference_dir_in(&env(&[ci]), &workspace),
            Ok(Some(workspace.join("../shared/reference/original/etc")))
        );
        let variable = root.join("shared/reference");
        let variable = variable.to_str().expect("UTF-8");
        assert_eq!(
            reference_dir_in(
                &env(&[ci, ("PHOENIX_REFERENCE_DIR", variable)]),
                Path::new("/nowhere")
            ),
            Ok(Some(etc))
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
