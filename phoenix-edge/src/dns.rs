//! `sync/dns/internal`: the internal DNS view, served by a dnsmasq instance of Phoenix's own
//! ([`phoenix_core::dns`]) on the node or in the DNS container.
//!
//! Observe reads the live configuration back into records, upstreams and zones, and whether Phoenix's
//! dnsmasq runs (its pid file, or its systemd unit where systemd runs). Apply checks the new file with
//! `dnsmasq --test` before it replaces the live one, then restarts only Phoenix's instance (never another
//! dnsmasq of the machine's): a file dnsmasq refuses is never put in place, and the failure is dnsmasq's
//! own message.

use std::collections::BTreeMap;
use std::time::Duration;

use phoenix_core::ManagerError;
use phoenix_core::dns::{self, CONFIG_PATH, InternalDns, PID_FILE};
use phoenix_pve::guest::{GuestExec, failure};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Where the new file is checked before it goes live.
const STAGED: &str = "/var/lib/phoenix/dns/dnsmasq.conf.new";
/// The systemd unit of Phoenix's dnsmasq, where systemd runs.
const UNIT: &str = "phoenix-dnsmasq";

/// Prints the live file, then a line `running` or `stopped`; exits 100 when there is no file.
const READ: &str = r#"[ -e "$1" ] || exit 100
cat "$1"
echo
if [ -d /run/systemd/system ]; then
  systemctl is-active --quiet "$3" && echo '#phoenix: running' || echo '#phoenix: stopped'
else
  [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null && echo '#phoenix: running' || echo '#phoenix: stopped'
fi"#;

/// `$1` live path, `$2` staged path, `$3` pid file, `$4` unit name; standard input is the new file.
/// Exit 3: dnsmasq refused the file, nothing replaced.
const WRITE: &str = r#"set -u
mkdir -p "$(dirname "$2")" "$(dirname "$1")"
cat > "$2"
if ! out=$(dnsmasq --test -C "$2" 2>&1); then
  rm -f "$2"; printf '%s\n' "$out" >&2; exit 3
fi
mv -f "$2" "$1"
if [ -d /run/systemd/system ]; then
  printf '[Unit]\nDescription=Phoenix internal DNS (dnsmasq)\nAfter=network-online.target\n\n[Service]\nExecStart=/usr/sbin/dnsmasq -k -C %s\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n' "$1" > "/etc/systemd/system/$4.service"
  systemctl daemon-reload && systemctl enable --quiet "$4" && systemctl restart "$4"
  exit $?
fi
if [ -s "$3" ] && kill -0 "$(cat "$3")" 2>/dev/null; then
  kill "$(cat "$3")"
  for _ in $(seq 50); do kill -0 "$(cat "$3")" 2>/dev/null || break; sleep 0.1; done
fi
dnsmasq -C "$1""#;

/// The fields the view is compared by: what it serves, and that it runs.
pub fn fields(view: &InternalDns) -> BTreeMap<String, Value> {
    let mut fields = match serde_json::to_value(view) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    fields.insert("running".to_owned(), Value::Bool(true));
    fields
}

/// The live view, `None` when Phoenix's file is not there.
pub async fn observe(guest: &dyn GuestExec) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let argv = ["/bin/sh", "-c", READ, "sh", CONFIG_PATH, PID_FILE, UNIT].map(str::to_owned);
    let output = guest.exec(&argv, None, &BTreeMap::new(), TIMEOUT).await?;
    match output.status {
        Some(0) => {}
        Some(100) => return Ok(None),
        _ => return Err(failure(guest, &format!("reading {CONFIG_PATH}"), &output)),
    }
    let running = output.stdout.contains("#phoenix: running");
    let (view, other) = dns::parse(&output.stdout);
    let mut fields = fields(&view);
    fields.insert("running".to_owned(), Value::Bool(running));
    if !other.is_empty() {
        fields.insert("other".to_owned(), Value::from(other));
    }
    Ok(Some(fields))
}

/// Writes `view`'s file, checked by `dnsmasq --test`, and restarts Phoenix's dnsmasq with it.
pub async fn apply(guest: &dyn GuestExec, view: &InternalDns) -> Result<(), ManagerError> {
    let text = dns::render(view);
    let argv = ["/bin/sh", "-c", WRITE, "sh", CONFIG_PATH, STAGED, PID_FILE, UNIT].map(str::to_owned);
    let output = guest
        .exec(&argv, Some(text.as_bytes()), &BTreeMap::new(), TIMEOUT)
        .await?;
    match output.status {
        Some(0) => Ok(()),
        Some(3) => Err(ManagerError::Failed {
            message: format!(
                "dnsmasq --test refused the internal view's configuration in {}; the live one is unchanged",
                guest.describe()
            ),
            details: Some(output.stderr.trim().to_owned()),
        }),
        _ => Err(failure(guest, "starting Phoenix's dnsmasq", &output)),
    }
}
