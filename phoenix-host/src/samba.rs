//! `host/samba`: the Samba shares, in one file of Phoenix's own, and the Samba user, on the host channel.
//!
//! The declared shares are rendered into `/etc/samba/phoenix-shares.conf` (a section per share: its path,
//! `valid users`, and its options), compared line by line, and included from `smb.conf` by one line Phoenix
//! appends there once; the rest of `smb.conf` is someone else's. A changed file is checked with `testparm`
//! before smbd is told to reload it: a configuration `testparm` refuses, or in which it finds a parameter it
//! does not know, is put back as it was and the step fails with its message. With a `password`, the user is
//! added to Samba's user database (`smbpasswd -a`) when Samba does not know it; the password is passed on
//! standard input and never compared afterwards (Samba keeps only its hash).

use std::collections::BTreeMap;

use phoenix_core::config::hypervisor::Samba;
use phoenix_core::{Change, ManagerError};
use phoenix_pve::resolve_secret;
use serde_json::{Value, json};

use crate::node::Node;

/// Phoenix's shares file.
const FILE: &str = "/etc/samba/phoenix-shares.conf";

/// Samba's main configuration, which includes [`FILE`].
const SMB_CONF: &str = "/etc/samba/smb.conf";

const HEADER: &str = "# Written by Phoenix (host/samba) from the hypervisor file's samba.shares.\n";

/// The line of `smb.conf` that includes Phoenix's file.
fn include_line() -> String {
    format!("include = {FILE}")
}

/// Whether a line of `smb.conf` is the include line, as Samba reads it (case and spaces aside).
fn is_include(line: &str) -> bool {
    let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    squeezed.eq_ignore_ascii_case(&format!("include={FILE}"))
}

/// The file's lines: a section per share.
fn lines(samba: &Samba) -> Vec<String> {
    let mut lines = Vec::new();
    for share in &samba.shares {
        lines.push(format!("[{}]", share.name));
        lines.push(format!("path = {}", share.path));
        if !share.valid_users.is_empty() {
            lines.push(format!("valid users = {}", share.valid_users.join(" ")));
        }
        for option in share.options.iter().flat_map(|text| text.split_whitespace()) {
            match option.split_once('=') {
                Some((key, value)) => lines.push(format!("{} = {}", key.trim(), value.trim())),
                None => lines.push(option.to_owned()),
            }
        }
    }
    lines
}

fn render(samba: &Samba) -> String {
    let mut text = HEADER.to_owned();
    for line in lines(samba) {
        if line.starts_with('[') {
            text.push('\n');
            text.push_str(&line);
        } else {
            text.push_str("   ");
            text.push_str(&line);
        }
        text.push('\n');
    }
    text
}

/// The declared fields: the file's lines, the include, and the Samba user when its password is declared.
pub(crate) fn desired(samba: &Samba) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::from([
        ("shares".to_owned(), json!(lines(samba))),
        ("included".to_owned(), json!(true)),
    ]);
    if samba.password.is_some() {
        fields.insert("samba_user".to_owned(), json!(samba.user));
    }
    fields
}

/// What the node has: the file's lines, whether `smb.conf` includes it, and whether Samba knows the user;
/// `None` without the file.
pub(crate) async fn observe(
    node: &Node,
    samba: &Samba,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let Some(lines) = node.read_setting_lines(FILE).await? else {
        return Ok(None);
    };
    let included = node
        .read_file(SMB_CONF)
        .await?
        .is_some_and(|conf| conf.lines().any(is_include));
    let mut fields = BTreeMap::from([
        ("shares".to_owned(), json!(lines)),
        ("included".to_owned(), json!(included)),
    ]);
    // A fact: a stopped smbd reads the shares when it starts.
    let running = node.run(&["smbcontrol", "smbd", "ping"], None).await?.success();
    fields.insert(
        "smbd".to_owned(),
        json!(if running { "running" } else { "not running" }),
    );
    if samba.password.is_some() {
        let known = knows_user(node, &samba.user).await?;
        fields.insert(
            "samba_user".to_owned(),
            if known { json!(samba.user) } else { Value::Null },
        );
    }
    Ok(Some(fields))
}

/// Whether Samba's user database has `user` (`pdbedit` is missing until Samba is installed).
async fn knows_user(node: &Node, user: &str) -> Result<bool, ManagerError> {
    Ok(node.run(&["pdbedit", "-L", "-u", user], None).await?.success())
}

/// Writes the file and the include, checks them with `testparm`, has smbd reload them, and adds the user.
pub(crate) async fn apply(node: &Node, samba: &Samba, change: &Change) -> Result<(), ManagerError> {
    let changed = |name: &str| change.fields.iter().any(|field| field.field == name);
    if changed("shares") || changed("included") {
        write_shares(node, samba).await?;
    }
    if changed("samba_user") {
        add_user(node, samba).await?;
    }
    Ok(())
}

async fn write_shares(node: &Node, samba: &Samba) -> Result<(), ManagerError> {
    let paths: Vec<&str> = samba.shares.iter().map(|share| share.path.as_str()).collect();
    node.require_directories(&paths, "no share was written").await?;
    let Some(conf) = node.read_file(SMB_CONF).await? else {
        return Err(ManagerError::failed(format!(
            "node {} has no {SMB_CONF}: install Samba (the package samba, which host/apt/packages adds), then \
             run again",
            node.name()
        )));
    };
    let before = node.read_file(FILE).await?;
    if before.as_deref() != Some(render(samba).as_str()) {
        node.write_file(FILE, &render(samba), "0644", None).await?;
    }
    let include_added = !conf.lines().any(is_include);
    if include_added {
        let mut text = conf.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "\n# Phoenix's shares (host/samba)\n{}\n",
            include_line()
        ));
        node.write_file(SMB_CONF, &text, "0644", None).await?;
    }
    let argv = ["testparm", "-s", SMB_CONF];
    let output = node.run(&argv, None).await?;
    let unknown = output.stderr.lines().find(|line| {
        line.contains("Unknown parameter encountered") || line.contains("Ignoring unknown parameter")
    });
    if output.success() && unknown.is_none() {
        reload(node).await?;
        return Ok(());
    }
    let failure = match unknown {
        Some(line) if output.success() => ManagerError::Failed {
            message: format!(
                "`testparm` found a parameter Samba does not know on node {}",
                node.name()
            ),
            details: Some(line.trim().to_owned()),
        },
        _ => node.failure(&argv, &output),
    };
    node.restore_file(FILE, before.as_deref()).await?;
    if include_added {
        node.write_file(SMB_CONF, &conf, "0644", None).await?;
    }
    Err(failure)
}

/// Has a running smbd read its configuration again; a stopped one reads it when it starts.
async fn reload(node: &Node) -> Result<(), ManagerError> {
    if node.run(&["smbcontrol", "smbd", "ping"], None).await?.success() {
        node.change(
            "had smbd reload its configuration (smbcontrol smbd reload-config)",
            &["smbcontrol", "smbd", "reload-config"],
            None,
        )
        .await?;
    }
    Ok(())
}

/// Adds the user to Samba's user database with the declared password, on standard input.
async fn add_user(node: &Node, samba: &Samba) -> Result<(), ManagerError> {
    let Some(secret) = &samba.password else {
        return Ok(());
    };
    if !node.run(&["id", "-u", &samba.user], None).await?.success() {
        return Err(ManagerError::failed(format!(
            "node {} has no user {}: Samba's users are Linux users; declare it in `users`, then run again",
            node.name(),
            samba.user
        )));
    }
    let password =
        resolve_secret(secret, &|name| std::env::var(name).ok(), node.config_dir()).map_err(|error| {
            ManagerError::failed(format!(
                "the Samba password of {} could not be read: {error}",
                samba.user
            ))
        })?;
    let input = format!("{0}\n{0}\n", password.expose());
    node.change(
        &format!("added {} to Samba's users (smbpasswd -a)", samba.user),
        &["smbpasswd", "-a", "-s", &samba.user],
        Some(input.as_bytes()),
    )
    .await
    .map(drop)
}
