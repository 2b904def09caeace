//! `host/access/token/<userid>!<tokenid>`: an API token, and the file its secret is written to.
//!
//! Proxmox shows a token's secret once, in the answer to its creation. Phoenix writes it to the declared
//! `secret_file`, a file it opens with mode 0600 before the token is asked for (so a path it cannot write
//! fails before a secret exists), and then moves into place; the secret goes nowhere else. A token that
//! exists while its file is gone cannot be repaired in place: the plan shows a destructive replace, which
//! runs only with `--allow-destroy` and then deletes the token, creates it again with a new secret, and
//! gives it back the ACL entries it had.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use phoenix_core::config::access::AccessToken;
use phoenix_core::engine::journal;
use phoenix_core::{Action, ManagerError};
use phoenix_pve::{Client, Form};
use serde_json::{Value, json};

use super::{find_user, flag_of, live_texts, optional_texts, users_listing};
use crate::node::Node;

/// The field that says whether the secret's file is there.
pub(super) const SECRET_FIELD: &str = "secret_file";

/// The declared fields: comment, privsep and expire when declared, and the secret's file.
pub(super) fn desired(token: &AccessToken) -> BTreeMap<String, Value> {
    let mut fields = optional_texts(&[("comment", token.comment.as_ref())]);
    if let Some(privsep) = token.privsep {
        fields.insert("privsep".to_owned(), json!(privsep));
    }
    if let Some(expire) = token.expire {
        fields.insert("expire".to_owned(), json!(expire));
    }
    fields.insert(SECRET_FIELD.to_owned(), json!(token.secret_file));
    fields
}

/// The token as Proxmox lists it under its user, and whether its secret's file exists.
pub(super) async fn observe(
    node: &Node,
    token: &AccessToken,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let users = users_listing(node).await?;
    let Some(live) = find_user(&users, &token.userid).and_then(|user| {
        user["tokens"]
            .as_array()?
            .iter()
            .find(|live| live["tokenid"].as_str() == Some(token.tokenid.as_str()))
    }) else {
        return Ok(None);
    };
    let mut fields = live_texts(live, &["comment"]);
    fields.insert("privsep".to_owned(), json!(flag_of(live, "privsep", true)));
    fields.insert("expire".to_owned(), json!(live["expire"].as_u64().unwrap_or(0)));
    let file = if Path::new(&token.secret_file).is_file() {
        token.secret_file.clone()
    } else {
        format!("{} (missing: the secret cannot be read back)", token.secret_file)
    };
    fields.insert(SECRET_FIELD.to_owned(), json!(file));
    Ok(Some(fields))
}

fn token_path(token: &AccessToken) -> String {
    format!("/access/users/{}/token/{}", token.userid, token.tokenid)
}

/// The declared settings among `fields` (all of them when `fields` is `None`).
fn settings_form(token: &AccessToken, fields: Option<&[&str]>) -> Form {
    let wanted = |key: &str| fields.is_none_or(|fields| fields.contains(&key));
    let mut form = Form::new();
    if let Some(comment) = token.comment.as_ref().filter(|_| wanted("comment")) {
        form = form.text("comment", comment);
    }
    if let Some(privsep) = token.privsep.filter(|_| wanted("privsep")) {
        form = form.flag("privsep", privsep);
    }
    if let Some(expire) = token.expire.filter(|_| wanted("expire")) {
        form = form.text("expire", expire.to_string());
    }
    form
}

/// Creates the token, updates its settings, or (a destructive replace) makes it again with a new secret.
pub(super) async fn apply(
    node: &Node,
    token: &AccessToken,
    action: Action,
    fields: &[&str],
) -> Result<(), ManagerError> {
    let client = node.client();
    match action {
        Action::Create => create(client, token).await,
        Action::Replace => {
            let full = token.full_id();
            let acl: Vec<Value> = client.get("/access/acl", &[]).await?;
            let held: Vec<&Value> = acl
                .iter()
                .filter(|entry| entry["type"] == "token" && entry["ugid"].as_str() == Some(full.as_str()))
                .collect();
            let _: Value = client.delete(&token_path(token), &[]).await?;
            create(client, token).await?;
            // Deleting a token deletes its ACL entries: they are given back as they were.
            for entry in held {
                let form = Form::new()
                    .text("path", entry["path"].as_str().unwrap_or("/"))
                    .text("roles", entry["roleid"].as_str().unwrap_or_default())
                    .text("tokens", &full)
                    .flag("propagate", flag_of(entry, "propagate", true));
                let _: Value = client.put("/access/acl", &form).await?;
            }
            Ok(())
        }
        Action::Update | Action::Delete => {
            let form = settings_form(token, Some(fields));
            if form_is_empty(token, fields) {
                return Ok(());
            }
            let _: Value = client.put(&token_path(token), &form).await?;
            Ok(())
        }
    }
}

fn form_is_empty(token: &AccessToken, fields: &[&str]) -> bool {
    let declared = [
        ("comment", token.comment.is_some()),
        ("privsep", token.privsep.is_some()),
        ("expire", token.expire.is_some()),
    ];
    !declared.iter().any(|(key, set)| *set && fields.contains(key))
}

/// Opens the secret's file, asks Proxmox for the token, and writes the secret it answers with.
async fn create(client: &Client, token: &AccessToken) -> Result<(), ManagerError> {
    let full = token.full_id();
    let pending = PendingSecret::open(Path::new(&token.secret_file)).map_err(|detail| {
        ManagerError::failed(format!(
            "token {full} was not created: its secret file {} cannot be written ({detail})",
            token.secret_file
        ))
    })?;
    let answer: Value = match client.post(&token_path(token), &settings_form(token, None)).await {
        Ok(answer) => answer,
        Err(error) => {
            pending.abandon();
            return Err(error.into());
        }
    };
    let Some(secret) = answer.get("value").and_then(Value::as_str) else {
        pending.abandon();
        return Err(ManagerError::failed(format!(
            "Proxmox created token {full} but its answer held no secret; delete the token and run again"
        )));
    };
    pending.commit(secret).map_err(|detail| {
        ManagerError::failed(format!(
            "token {full} was created but its secret could not be written to {} ({detail}); the secret is lost: \
             run again with --allow-destroy to make a new one",
            token.secret_file
        ))
    })?;
    journal::done(format!("wrote the secret of {full} to {}", token.secret_file));
    Ok(())
}

/// A secret's file before the secret is in it: a hidden file beside the target, mode 0600 from the start.
struct PendingSecret {
    file: File,
    temporary: PathBuf,
    target: PathBuf,
}

impl PendingSecret {
    fn open(target: &Path) -> Result<PendingSecret, String> {
        let name = target
            .file_name()
            .ok_or_else(|| "it names no file".to_owned())?
            .to_string_lossy();
        let directory = target.parent().unwrap_or(Path::new("/"));
        if !directory.is_dir() {
            return Err(format!("there is no directory {}", directory.display()));
        }
        let temporary = directory.join(format!(".{name}.phoenix-new"));
        // A file left by a run that stopped half way is Phoenix's own and holds no live secret.
        let _ = fs::remove_file(&temporary);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|error| error.to_string())?;
        Ok(PendingSecret {
            file,
            temporary,
            target: target.to_path_buf(),
        })
    }

    fn commit(mut self, secret: &str) -> Result<(), String> {
        let written = writeln!(self.file, "{secret}")
            .and_then(|()| self.file.sync_all())
            .and_then(|()| fs::rename(&self.temporary, &self.target));
        written.map_err(|error| {
            let _ = fs::remove_file(&self.temporary);
            error.to_string()
        })
    }

    fn abandon(self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_secret_file_is_private_from_the_start_and_moved_into_place() {
        let directory = std::env::temp_dir().join(format!("phoenix-token-{}", std::process::id()));
        fs::create_dir_all(&directory).expect("a directory");
        let target = directory.join("token");
        let pending = PendingSecret::open(&target).expect("opens");
        let mode = fs::metadata(&pending.temporary)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!target.exists());
        pending.commit("s3cret").expect("writes");
        assert_eq!(fs::read_to_string(&target).expect("reads"), "s3cret\n");
        assert_eq!(
            fs::metadata(&target).expect("exists").permissions().mode() & 0o777,
            0o600
        );
        assert!(PendingSecret::open(&directory.join("missing/token")).is_err());
        fs::remove_dir_all(&directory).expect("cleans up");
    }
}
