//! `sync/gateway`: the nginx gateway's site (and the configuration directory's snippets) in the gateway
//! container, checked by that container's own `nginx -t` before it goes live.
//!
//! Observe reads the SHA-256 of each file. Apply stages the new files outside nginx's directories
//! (`/var/lib/phoenix/gateway/new`), then in one script moves them into place with the old ones kept aside,
//! runs `nginx -t`, and either reloads nginx or puts every old file back (or removes a new one) and fails
//! with nginx's own message, which names the file and line. The running nginx never loads a
//! configuration that failed the test, and none is left on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use phoenix_core::gateway::{SNIPPETS_DIR, SNIPPETS_TARGET};
use phoenix_core::{Estate, ManagerError};
use phoenix_pve::guest::{GuestExec, failure, file_digests};
use phoenix_pve::host::sha256_hex;
use serde_json::Value;

/// Where new and old files wait while nginx checks the configuration.
pub const STAGING: &str = "/var/lib/phoenix/gateway";

const TIMEOUT: Duration = Duration::from_secs(60);

/// Writes standard input to `$1` (a staging file).
const STAGE: &str = "set -e; umask 022; mkdir -p \"$(dirname \"$1\")\"; cat > \"$1\"";

/// `$1` is the staging directory; then pairs of `staged-name live-path`. Swaps every file in, tests, and
/// reloads or rolls back. Exit 3: `nginx -t` refused, everything put back.
const SWAP: &str = r#"set -u
stage=$1; shift
mkdir -p "$stage/old"
n=0
while [ $# -ge 2 ]; do
  n=$((n + 1)); eval "name_$n=\$1 path_$n=\$2"; shift 2
done
i=1
while [ $i -le $n ]; do
  eval "name=\$name_$i path=\$path_$i"
  rm -f "$stage/old/$name" "$stage/old/$name.absent"
  if [ -e "$path" ]; then cp -p "$path" "$stage/old/$name"; else : > "$stage/old/$name.absent"; fi
  mkdir -p "$(dirname "$path")"
  mv -f "$stage/new/$name" "$path"
  i=$((i + 1))
done
if out=$(nginx -t 2>&1); then
  rm -rf "$stage/old"
  nginx -s reload 2>/dev/null || systemctl reload-or-restart nginx 2>/dev/null || nginx
  exit $?
fi
i=1
while [ $i -le $n ]; do
  eval "name=\$name_$i path=\$path_$i"
  if [ -e "$stage/old/$name.absent" ]; then rm -f "$path"; else mv -f "$stage/old/$name" "$path"; fi
  i=$((i + 1))
done
rm -rf "$stage/old"
printf '%s\n' "$out" >&2
exit 3"#;

/// The gateway's files as the configuration renders them: path in the container to content, or why they
/// cannot be rendered.
pub type Site = Result<BTreeMap<String, String>, String>;

/// The gateway's files as the configuration in `dir` renders them: its site (from its template) and the
/// directory's `nginx/snippets/*`, by path in the container; why not, when they cannot be. `None` when no
/// gateway is declared.
pub fn site(estate: &Estate, dir: &Path) -> Option<Site> {
    let gateway = estate.files().hypervisor.gateway.as_ref()?;
    let path = dir.join(&gateway.template);
    let render = || -> Result<BTreeMap<String, String>, String> {
        let template =
            std::fs::read_to_string(&path).map_err(|error| format!("reading {}: {error}", path.display()))?;
        let rendered = phoenix_core::gateway::render(estate, gateway, &template).map_err(|error| {
            let line = error
                .line
                .map(|line| format!(", line {line}"))
                .unwrap_or_default();
            format!("{}{line}: {}", path.display(), error.message)
        })?;
        let mut files = BTreeMap::from([(gateway.site_path.clone(), rendered)]);
        let snippets = dir.join(SNIPPETS_DIR);
        if let Ok(entries) = std::fs::read_dir(&snippets) {
            for entry in entries.flatten() {
                let source = entry.path();
                if !source.is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(&source)
                    .map_err(|error| format!("reading {}: {error}", source.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                files.insert(format!("{SNIPPETS_TARGET}/{name}"), text);
            }
        }
        Ok(files)
    };
    Some(render())
}

/// The fields a site is compared by: each file's path to `sha256:<digest>`.
pub fn fields(site: &Site) -> BTreeMap<String, Value> {
    match site {
        Ok(files) => files
            .iter()
            .map(|(path, content)| (path.clone(), Value::String(digest(content.as_bytes()))))
            .collect(),
        Err(why) => BTreeMap::from([(
            "site".to_owned(),
            Value::String(format!("(cannot be rendered: {why})")),
        )]),
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The live digests of the files `site` names; those that are not there are left out.
pub async fn observe(guest: &dyn GuestExec, site: &Site) -> Result<BTreeMap<String, Value>, ManagerError> {
    let Ok(files) = site else {
        return Ok(BTreeMap::new());
    };
    let digests = file_digests(guest, files.keys().map(String::as_str), TIMEOUT).await?;
    Ok(digests
        .into_iter()
        .filter(|(path, _)| files.contains_key(path))
        .map(|(path, hex)| (path, Value::String(format!("sha256:{hex}"))))
        .collect())
}

/// Puts `changed` (paths of `site`) in place, checked by `nginx -t`, and reloads nginx.
pub async fn apply(guest: &dyn GuestExec, site: &Site, changed: &[String]) -> Result<(), ManagerError> {
    let files = site
        .as_ref()
        .map_err(|why| ManagerError::failed(format!("the gateway's site: {why}")))?;
    let mut swap = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        SWAP.to_owned(),
        "sh".to_owned(),
        STAGING.to_owned(),
    ];
    for (index, path) in changed.iter().enumerate() {
        let Some(content) = files.get(path) else { continue };
        let name = format!("{index}");
        let staged = format!("{STAGING}/new/{name}");
        let argv = ["/bin/sh", "-c", STAGE, "sh", &staged].map(str::to_owned);
        let output = guest
            .exec(&argv, Some(content.as_bytes()), &BTreeMap::new(), TIMEOUT)
            .await?;
        if !output.success() {
            return Err(failure(guest, &format!("staging {path}"), &output));
        }
        swap.push(name);
        swap.push(path.clone());
    }
    let output = guest.exec(&swap, None, &BTreeMap::new(), TIMEOUT).await?;
    match output.status {
        Some(0) => Ok(()),
        Some(3) => Err(ManagerError::Failed {
            message: format!(
                "nginx -t refused the new gateway configuration in {}; the files it replaced are back",
                guest.describe()
            ),
            details: Some(output.stderr.trim().to_owned()),
        }),
        _ => Err(failure(guest, "putting the gateway's files in place", &output)),
    }
}
