//! Work on the node for containers: their commands inside (through `lxc-attach`) and the raw `lxc.*`
//! keys of their config files, which the API cannot set.

use std::collections::BTreeMap;
use std::sync::Arc;

use phoenix_core::ManagerError;
use phoenix_pve::guest::{LxcAttach, QUICK_TIMEOUT, failure, host_error};
use phoenix_pve::host::HostChannel;

/// Runs commands inside containers, and on the node for raw LXC keys.
#[derive(Clone)]
pub(crate) struct Guest {
    pub(crate) host: Arc<dyn HostChannel>,
    /// The channels of the other nodes of a cluster, by name: a container is entered on its own node.
    pub(crate) others: BTreeMap<String, Arc<dyn HostChannel>>,
    /// Where the cluster file system is mounted (`/etc/pve`).
    pub(crate) pve_root: String,
}

/// Rewrites the raw keys of a container config's main section (before the first `[snapshot]`): each
/// given key loses its old lines and gets one line with the new value. Keys and values arrive as
/// arguments, never as shell code.
const SET_RAW_KEYS: &str = r#"set -eu
file="$1"; lock="$2"; shift 2
# Under Proxmox's own config lock, and replaced in one step, so no concurrent pct set or backup is lost.
mkdir -p "$(dirname "$lock")"
exec 9>"$lock"
flock 9
tmp="$file.phoenix.tmp"
awk '
BEGIN {
    for (i = 1; i < ARGC - 1; i += 2) { n++; keys[n] = ARGV[i]; values[n] = ARGV[i + 1]; wanted[ARGV[i]] = 1 }
    for (i = 1; i < ARGC - 1; i++) delete ARGV[i]
}
!done && /^[ \t]*$/ { blanks++; next }
/^\[/ && !done {
    for (j = 1; j <= n; j++) print keys[j] ": " values[j]
    for (; blanks > 0; blanks--) print ""
    done = 1
}
!done {
    key = $0; sub(/:.*/, "", key); if (key in wanted) next
    for (; blanks > 0; blanks--) print ""
}
{ print }
END { if (!done) { for (j = 1; j <= n; j++) print keys[j] ": " values[j]; for (; blanks > 0; blanks--) print "" } }
' "$@" "$file" > "$tmp"
mv "$tmp" "$file"
"#;

impl Guest {
    /// Commands inside one container on `node`, through that node's channel.
    pub(crate) fn exec_on(&self, node: &str, ctid: u32) -> LxcAttach {
        LxcAttach {
            host: Arc::clone(self.others.get(node).unwrap_or(&self.host)),
            ctid,
        }
    }

    /// Commands inside one container, through the first node's channel.
    pub(crate) fn exec(&self, ctid: u32) -> LxcAttach {
        LxcAttach {
            host: Arc::clone(&self.host),
            ctid,
        }
    }

    fn config_file(&self, node: &str, ctid: u32) -> String {
        format!("{}/nodes/{node}/lxc/{ctid}.conf", self.pve_root)
    }

    /// The raw `lxc.*` keys of a container's config (its main section), read on the node.
    pub(crate) async fn raw_keys(
        &self,
        node: &str,
        ctid: u32,
    ) -> Result<BTreeMap<String, Vec<String>>, ManagerError> {
        let argv = ["cat".to_owned(), self.config_file(node, ctid)];
        let output = self
            .host
            .run(&argv, None, QUICK_TIMEOUT)
            .await
            .map_err(host_error)?;
        if !output.success() {
            return Err(failure(
                &self.exec(ctid),
                "reading the container's config file on the node",
                &output,
            ));
        }
        let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let lines = output
            .stdout
            .lines()
            .take_while(|line| !line.starts_with('['))
            .filter(|line| line.starts_with("lxc."));
        for (key, value) in lines.filter_map(|line| line.split_once(':')) {
            keys.entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
        Ok(keys)
    }

    /// Sets raw `lxc.*` keys in a container's config file on the node.
    pub(crate) async fn set_raw_keys(
        &self,
        node: &str,
        ctid: u32,
        keys: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), ManagerError> {
        let mut argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            SET_RAW_KEYS.into(),
            "phoenix-raw-keys".into(),
        ];
        argv.push(self.config_file(node, ctid));
        argv.push(format!("/run/lock/lxc/pve-config-{ctid}.lock"));
        for (key, values) in keys {
            for value in values {
                argv.push(key.clone());
                argv.push(value.clone());
            }
        }
        let output = self
            .host
            .run(&argv, None, QUICK_TIMEOUT)
            .await
            .map_err(host_error)?;
        if output.success() {
            Ok(())
        } else {
            Err(failure(&self.exec(ctid), "writing raw LXC keys", &output))
        }
    }
}
