//! `host/apt/packages`: the packages the node must have, installed with `apt-get` on the host channel.
//!
//! What is installed is read with `dpkg-query`; the package lists are refreshed (`apt-get update`) only
//! when a package is missing or an upgrade was asked for, and then the missing packages are installed in
//! one `apt-get install`, which resolves every name before it installs any: an unknown name fails the
//! step with apt's message and installs nothing. Nothing prompts: `DEBIAN_FRONTEND=noninteractive`, and
//! a configuration file changed on the node is kept (`--force-confold`). Packages are never removed.
//! With `--upgrade`, the step also wants no package left to upgrade (`apt-get dist-upgrade`, as Proxmox
//! asks, never `apt-get upgrade`).

use std::collections::BTreeMap;
use std::time::Duration;

use phoenix_core::{AptPackages, ManagerError};
use serde_json::{Value, json};

use crate::node::Node;

/// How long `apt-get update`, `install` or `dist-upgrade` may take.
const APT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `apt-get` as every step runs it: no questions, the node's own configuration files kept, and a wait of
/// up to five minutes for another apt (a daily update) to let go of its lock.
const APT_GET: &[&str] = &[
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "apt-get",
    "-q",
    "-y",
    "-o",
    "DPkg::Lock::Timeout=300",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
];

/// The declared fields: every package, and with `upgrade` nothing left to upgrade.
pub(crate) fn desired(declared: &AptPackages, upgrade: bool) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([("packages".to_owned(), json!(declared.packages))]);
    if upgrade {
        fields.insert("upgradable".to_owned(), json!(0));
    }
    fields
}

/// What the node has: the declared packages that are installed, and with `upgrade` how many packages
/// the node's current lists can upgrade.
pub(crate) async fn observe(
    node: &Node,
    declared: &AptPackages,
    upgrade: bool,
) -> Result<BTreeMap<String, Value>, ManagerError> {
    let installed = installed(node, declared).await?;
    let mut fields = BTreeMap::from([("packages".to_owned(), json!(installed))]);
    if upgrade {
        fields.insert("upgradable".to_owned(), json!(upgradable(node).await?));
    }
    Ok(fields)
}

/// The declared packages dpkg has installed, in the declared order.
async fn installed(node: &Node, declared: &AptPackages) -> Result<Vec<String>, ManagerError> {
    let mut argv = vec![
        "dpkg-query",
        "-W",
        "-f",
        "${Package}\\t${db:Status-Abbrev}\\n",
        "--",
    ];
    argv.extend(declared.packages.iter().map(String::as_str));
    let output = node.run(&argv, None).await?;
    // dpkg-query exits 1 when a name is unknown to dpkg, and still lists the others.
    if !matches!(output.status, Some(0 | 1)) {
        return Err(node.failure(&argv, &output));
    }
    let installed: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name)
        .collect();
    Ok(declared
        .packages
        .iter()
        .filter(|package| installed.contains(&package.as_str()))
        .cloned()
        .collect())
}

/// How many packages `apt-get dist-upgrade` would install or upgrade now (a simulation).
async fn upgradable(node: &Node) -> Result<usize, ManagerError> {
    let argv = ["apt-get", "-s", "-q", "-o", "Debug::NoLocking=1", "dist-upgrade"];
    let stdout = node.check(&argv, None).await?;
    Ok(stdout.lines().filter(|line| line.starts_with("Inst ")).count())
}

/// Installs what is missing, and with `upgrade` upgrades what can be.
pub(crate) async fn apply(node: &Node, declared: &AptPackages, upgrade: bool) -> Result<(), ManagerError> {
    let installed = installed(node, declared).await?;
    let missing: Vec<&str> = declared
        .packages
        .iter()
        .filter(|package| !installed.contains(package))
        .map(String::as_str)
        .collect();
    if missing.is_empty() && !upgrade {
        return Ok(());
    }
    apt_get(node, "refreshed the package lists", &["update", "--error-on=any"]).await?;
    if !missing.is_empty() {
        let mut arguments = vec!["install", "--"];
        arguments.extend(&missing);
        apt_get(node, &format!("installed {}", missing.join(", ")), &arguments).await?;
    }
    if upgrade && upgradable(node).await? > 0 {
        apt_get(node, "upgraded the node's packages", &["dist-upgrade"]).await?;
    }
    Ok(())
}

/// Runs `apt-get` with `arguments` as every step runs it, recorded as `what`.
pub(crate) async fn apt_get(node: &Node, what: &str, arguments: &[&str]) -> Result<(), ManagerError> {
    let mut argv = APT_GET.to_vec();
    argv.extend(arguments);
    node.change_for(what, &argv, APT_TIMEOUT).await.map(drop)
}
