//! `host/user/<name>`: a Linux user on the node, through the host channel: the account (`useradd`), its
//! password hash (`chpasswd -e`, on standard input), sudo (a drop-in of Phoenix's own, checked with
//! `visudo -c` before it is moved into place) and its SSH key (added to `authorized_keys`, never replacing
//! the keys already there).
//!
//! The password hash never appears in a plan or a log: the field holds a digest of it.

use std::collections::BTreeMap;

use phoenix_core::config::hypervisor::HostUser;
use phoenix_core::{Action, Change, ManagerError};
use phoenix_pve::host::sha256_hex;
use serde_json::{Value, json};

use crate::node::Node;

/// The value the earlier version writes for "no password".
const UNSET_PASSWORD: &str = "NOT_SET";

/// The declared fields.
pub(crate) fn desired(user: &HostUser) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([("sudo".to_owned(), json!(user.sudo_access))]);
    if let Some(hash) = password_hash(user) {
        fields.insert("password".to_owned(), json!(digest(hash)));
    }
    if let Some(key) = ssh_key(user) {
        fields.insert("ssh_public_key".to_owned(), json!(key));
    }
    fields
}

fn password_hash(user: &HostUser) -> Option<&str> {
    user.password_hash
        .as_deref()
        .map(str::trim)
        .filter(|hash| !hash.is_empty() && *hash != UNSET_PASSWORD)
}

fn ssh_key(user: &HostUser) -> Option<&str> {
    user.ssh_public_key
        .as_deref()
        .map(str::trim)
        .filter(|key| !key.is_empty())
}

/// How a password hash shows in plans: enough to see that it changes, nothing to crack.
fn digest(hash: &str) -> String {
    format!("sha256:{}", &sha256_hex(hash.as_bytes())[..16])
}

fn sudoers_path(name: &str) -> String {
    format!("/etc/sudoers.d/phoenix-{name}")
}

fn sudoers_line(name: &str) -> String {
    format!("{name} ALL=(ALL:ALL) ALL\n")
}

/// What the node has for this user, or `None` when there is no such account.
pub(crate) async fn observe(
    node: &Node,
    user: &HostUser,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let name = user.username.as_str();
    let passwd = node.run(&["getent", "passwd", name], None).await?;
    match passwd.status {
        Some(0) => {}
        // getent: 2 is "no such key".
        Some(2) => return Ok(None),
        _ => return Err(node.failure(&["getent", "passwd", name], &passwd)),
    }
    let home = home_of(&passwd.stdout).ok_or_else(|| {
        ManagerError::failed(format!(
            "`getent passwd {name}` on node {} gave no home directory",
            node.name()
        ))
    })?;
    let mut fields = BTreeMap::new();
    let sudoers = node.read_file(&sudoers_path(name)).await?;
    fields.insert(
        "sudo".to_owned(),
        json!(sudoers.as_deref() == Some(sudoers_line(name).as_str())),
    );
    if password_hash(user).is_some() {
        let shadow = node.check(&["getent", "shadow", name], None).await?;
        if let Some(hash) = shadow.split(':').nth(1).filter(|hash| hash.starts_with('$')) {
            fields.insert("password".to_owned(), json!(digest(hash)));
        }
    }
    if let Some(key) = ssh_key(user) {
        let keys = node.read_file(&format!("{home}/.ssh/authorized_keys")).await?;
        if keys.is_some_and(|keys| keys.lines().any(|line| line.trim() == key)) {
            fields.insert("ssh_public_key".to_owned(), json!(key));
        }
    }
    Ok(Some(fields))
}

/// The home directory of a `getent passwd` line.
fn home_of(passwd: &str) -> Option<&str> {
    passwd
        .trim_end()
        .split(':')
        .nth(5)
        .filter(|home| home.starts_with('/'))
}

/// Carries out `change`: creates the account first when it is new, then each field that differs.
pub(crate) async fn apply(node: &Node, user: &HostUser, change: &Change) -> Result<(), ManagerError> {
    let name = user.username.as_str();
    if change.action == Action::Create {
        node.change(
            &format!("created user {name}"),
            &[
                "useradd",
                "--create-home",
                "--user-group",
                "--shell",
                "/bin/bash",
                name,
            ],
            None,
        )
        .await?;
    }
    for field in &change.fields {
        match field.field.as_str() {
            "password" => {
                if let Some(hash) = password_hash(user) {
                    let line = format!("{name}:{hash}\n");
                    node.change(
                        &format!("set the password of {name}"),
                        &["chpasswd", "-e"],
                        Some(line.as_bytes()),
                    )
                    .await?;
                }
            }
            "sudo" => set_sudo(node, name, user.sudo_access).await?,
            "ssh_public_key" => {
                if let Some(key) = ssh_key(user) {
                    add_key(node, name, key).await?;
                }
            }
            other => {
                return Err(ManagerError::failed(format!(
                    "host/user/{name}: no field {other}"
                )));
            }
        }
    }
    Ok(())
}

/// Grants sudo with a drop-in that `visudo -c` accepted, or removes Phoenix's drop-in.
async fn set_sudo(node: &Node, name: &str, sudo: bool) -> Result<(), ManagerError> {
    let path = sudoers_path(name);
    if !sudo {
        return node
            .change(&format!("removed {path}"), &["rm", "-f", "--", &path], None)
            .await
            .map(drop);
    }
    // sudo ignores files in sudoers.d whose names contain a dot: the candidate is inert until moved.
    let candidate = format!("/etc/sudoers.d/.phoenix-{name}.new");
    node.write_file(&candidate, &sudoers_line(name), "0440", None)
        .await?;
    let checked = node.run(&["visudo", "-c", "-q", "-f", &candidate], None).await?;
    if !checked.success() {
        let _ = node.run(&["rm", "-f", "--", &candidate], None).await;
        return Err(node.failure(&["visudo", "-c", "-f", &candidate], &checked));
    }
    node.change(
        &format!("installed {path}"),
        &["mv", "-f", "--", &candidate, &path],
        None,
    )
    .await
    .map(drop)
}

/// Appends `key` to the user's `authorized_keys`, keeping the keys already there.
async fn add_key(node: &Node, name: &str, key: &str) -> Result<(), ManagerError> {
    let passwd = node.check(&["getent", "passwd", name], None).await?;
    let home = home_of(&passwd)
        .ok_or_else(|| {
            ManagerError::failed(format!(
                "user {name} has no home directory on node {}",
                node.name()
            ))
        })?
        .to_owned();
    let dir = format!("{home}/.ssh");
    let path = format!("{dir}/authorized_keys");
    node.check(
        &["install", "-d", "-m", "0700", "-o", name, "-g", name, &dir],
        None,
    )
    .await?;
    let mut keys = node.read_file(&path).await?.unwrap_or_default();
    if keys.lines().any(|line| line.trim() == key) {
        return Ok(());
    }
    if !keys.is_empty() && !keys.ends_with('\n') {
        keys.push('\n');
    }
    keys.push_str(key);
    keys.push('\n');
    node.write_file(&path, &keys, "0600", Some(name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(hash: Option<&str>, key: Option<&str>) -> HostUser {
        serde_json::from_value(json!({
            "username": "phoenix_admin",
            "password_hash": hash,
            "sudo_access": true,
            "ssh_public_key": key,
        }))
        .expect("a user")
    }

    #[test]
    fn the_password_shows_as_a_digest_and_not_set_means_none() {
        let hash = "$6$salt$abcdefghijklmnop";
        let fields = desired(&user(Some(hash), None));
        let shown = fields["password"].as_str().expect("a digest");
        assert!(shown.starts_with("sha256:") && !shown.contains(hash), "{shown}");
        for unset in ["NOT_SET", "", "  "] {
            assert!(!desired(&user(Some(unset), Some(""))).contains_key("password"));
        }
        assert!(!desired(&user(None, Some(""))).contains_key("ssh_public_key"));
    }

    #[test]
    fn the_home_directory_is_the_sixth_field() {
        assert_eq!(
            home_of("alice:x:1001:1001:Alice:/home/alice:/bin/bash\n"),
            Some("/home/alice")
        );
        assert_eq!(home_of("alice:x:1001"), None);
    }
}
