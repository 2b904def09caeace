//! `host/nfs/exports`: the NFS exports, in one file of Phoenix's own, on the host channel.
//!
//! The declared exports are rendered into `/etc/exports.d/phoenix.exports` (one line per path, each
//! client with its options), compared line by line with what the file has, and applied with
//! `exportfs -ra` only when the file changed. An export path that does not exist on the node fails the
//! step, naming it, before anything is written; a file `exportfs` refuses is put back as it was and
//! `exportfs -ra` runs again, so a bad export never stays live. Lines in `/etc/exports` and other files
//! are someone else's, and left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use phoenix_core::ManagerError;
use phoenix_core::config::hypervisor::Nfs;
use serde_json::{Value, json};

use crate::node::Node;

/// Phoenix's exports file.
const FILE: &str = "/etc/exports.d/phoenix.exports";

/// How long `exportfs -ra` may take: it looks every client up, and a slow resolver makes that minutes.
const EXPORTFS_TIMEOUT: Duration = Duration::from_secs(10 * 60);

const HEADER: &str = "# Written by Phoenix (host/nfs/exports) from the hypervisor file's nfs.exports.\n";

/// The lines of the file: `<path> <client>(<options>) ...`.
fn lines(nfs: &Nfs) -> Vec<String> {
    nfs.exports
        .iter()
        .map(|export| {
            let clients: Vec<String> = export
                .clients
                .iter()
                .map(|client| {
                    if export.options.is_empty() {
                        client.clone()
                    } else {
                        format!("{client}({})", export.options.join(","))
                    }
                })
                .collect();
            format!("{} {}", export.path, clients.join(" "))
        })
        .collect()
}

fn render(nfs: &Nfs) -> String {
    let mut text = HEADER.to_owned();
    for line in lines(nfs) {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The declared fields: the file's lines.
pub(crate) fn desired(nfs: &Nfs) -> BTreeMap<String, Value> {
    BTreeMap::from([("exports".to_owned(), json!(lines(nfs)))])
}

/// What the node has: the file's lines, comments and blank lines aside; `None` without the file.
pub(crate) async fn observe(node: &Node) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let Some(lines) = node.read_setting_lines(FILE).await? else {
        return Ok(None);
    };
    Ok(Some(BTreeMap::from([("exports".to_owned(), json!(lines))])))
}

/// Writes the file and re-exports, once every path exists; puts the old file back if `exportfs` fails.
pub(crate) async fn apply(node: &Node, nfs: &Nfs) -> Result<(), ManagerError> {
    let paths: Vec<&str> = nfs.exports.iter().map(|export| export.path.as_str()).collect();
    node.require_directories(&paths, "nothing was exported").await?;
    let before = node.read_file(FILE).await?;
    node.write_file(FILE, &render(nfs), "0644", None).await?;
    let argv = ["exportfs", "-ra"];
    let output = node.run_for(&argv, None, EXPORTFS_TIMEOUT).await?;
    if output.success() {
        journal_done("exported the NFS exports again (exportfs -ra)");
        return Ok(());
    }
    let failure = node.failure(&argv, &output);
    node.restore_file(FILE, before.as_deref()).await?;
    node.run_for(&argv, None, EXPORTFS_TIMEOUT).await?;
    Err(failure)
}

fn journal_done(what: &str) {
    phoenix_core::engine::journal::done(what);
}
