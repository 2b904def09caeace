//! `host/access/*`: Proxmox VE groups, roles, users, API tokens and ACL entries, through `/access/*`.
//!
//! Only what is declared is compared and written, and nothing is ever deleted: a group, role, user, token
//! or ACL entry the configuration does not name is left as it is. Groups carry a comment; a role has
//! exactly its declared privileges; a user's declared fields are compared, and its declared memberships
//! are added (`append`), never taken away. A user's password is sent once, when the user is created:
//! Proxmox cannot show a password back, so a changed one is not seen (change it with `pveum passwd`).
//! Tokens and ACL entries have modules of their own ([`token`], [`acl`]).

mod acl;
mod token;

use std::collections::BTreeMap;

use phoenix_core::config::access::{AccessGroup, AccessRole, AccessUser};
use phoenix_core::engine::change::diff_fields;
use phoenix_core::{AccessStep, Action, Change, Consequence, ManagerError, Observed};
use phoenix_pve::{Form, resolve_secret};
use serde_json::{Value, json};

use crate::node::Node;

/// What a declared password shows as in plans: it is never read back, only set at creation.
const PASSWORD_SET_AT_CREATION: &str = "(set at creation)";

/// The declared fields of `step`.
fn desired(step: &AccessStep) -> BTreeMap<String, Value> {
    match step {
        AccessStep::Group(group) => optional_texts(&[("comment", group.comment.as_ref())]),
        AccessStep::Role(role) => BTreeMap::from([("privs".to_owned(), json!(sorted(&role.privs)))]),
        AccessStep::User(user) => user_desired(user),
        AccessStep::Token(declared) => token::desired(declared),
        AccessStep::Acl(entries) => acl::desired(entries),
    }
}

/// What Proxmox has for `step`, or `None` when it does not exist.
pub(crate) async fn observe(
    node: &Node,
    step: &AccessStep,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    match step {
        AccessStep::Group(group) => observe_group(node, group).await,
        AccessStep::Role(role) => observe_role(node, role).await,
        AccessStep::User(user) => observe_user(node, user).await,
        AccessStep::Token(declared) => token::observe(node, declared).await,
        AccessStep::Acl(entries) => acl::observe(node, entries).await.map(Some),
    }
}

/// The changes for `step`: a create, the fields that differ, or for a token whose secret file is gone, a
/// destructive replace.
pub(crate) fn diff(
    address: &phoenix_core::Address,
    step: &AccessStep,
    observed: Option<&Observed>,
) -> Vec<Change> {
    let fields = desired(step);
    let Some(observed) = observed else {
        return vec![Change::create(address.clone(), fields)];
    };
    let changed = diff_fields(&fields, &observed.fields, |field, _, _| match step {
        AccessStep::Token(_) if field == token::SECRET_FIELD => Consequence::Destructive,
        _ => Consequence::Live,
    });
    if changed.is_empty() {
        return Vec::new();
    }
    let action = if changed
        .iter()
        .any(|field| field.consequence == Consequence::Destructive)
    {
        Action::Replace
    } else {
        Action::Update
    };
    vec![Change {
        address: address.clone(),
        action,
        fields: changed,
    }]
}

/// Carries out `change` for `step`.
pub(crate) async fn apply(node: &Node, step: &AccessStep, change: &Change) -> Result<(), ManagerError> {
    let fields: Vec<&str> = change.fields.iter().map(|field| field.field.as_str()).collect();
    let client = node.client();
    match step {
        AccessStep::Group(group) => {
            let form = Form::new();
            let form = match &group.comment {
                Some(comment) => form.text("comment", comment),
                None => form,
            };
            if change.action == Action::Create {
                let _: Value = client
                    .post("/access/groups", &form.text("groupid", &group.groupid))
                    .await?;
            } else {
                let _: Value = client
                    .put(&format!("/access/groups/{}", group.groupid), &form)
                    .await?;
            }
        }
        AccessStep::Role(role) => {
            let privs = sorted(&role.privs).join(",");
            if change.action == Action::Create {
                let mut form = Form::new().text("roleid", &role.roleid);
                if !privs.is_empty() {
                    form = form.text("privs", privs);
                }
                let _: Value = client.post("/access/roles", &form).await?;
            } else {
                let form = Form::new().text("privs", privs);
                let _: Value = client
                    .put(&format!("/access/roles/{}", role.roleid), &form)
                    .await?;
            }
        }
        AccessStep::User(user) => apply_user(node, user, change.action, &fields).await?,
        AccessStep::Token(declared) => token::apply(node, declared, change.action, &fields).await?,
        AccessStep::Acl(entries) => acl::apply(client, entries, &fields).await?,
    }
    Ok(())
}

fn sorted(items: &[String]) -> Vec<&str> {
    let mut items: Vec<&str> = items.iter().map(String::as_str).collect();
    items.sort_unstable();
    items.dedup();
    items
}

/// The text fields that are declared, by name.
fn optional_texts(pairs: &[(&str, Option<&String>)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .filter_map(|(key, value)| value.map(|value| ((*key).to_owned(), json!(value))))
        .collect()
}

/// A flag as Proxmox writes it (`1`, `0`, or a boolean), with its default when it is absent.
fn flag_of(live: &Value, key: &str, default: bool) -> bool {
    match live.get(key) {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::Number(number)) => number.as_i64() != Some(0),
        Some(Value::String(text)) => text != "0",
        _ => default,
    }
}

/// The live text fields among `keys`, when they are not empty.
fn live_texts(live: &Value, keys: &[&str]) -> BTreeMap<String, Value> {
    keys.iter()
        .filter_map(|key| {
            live.get(*key)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
                .map(|text| ((*key).to_owned(), json!(text)))
        })
        .collect()
}

async fn observe_group(
    node: &Node,
    group: &AccessGroup,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let groups: Vec<Value> = node.client().get("/access/groups", &[]).await?;
    Ok(groups
        .iter()
        .find(|live| live["groupid"].as_str() == Some(group.groupid.as_str()))
        .map(|live| live_texts(live, &["comment"])))
}

async fn observe_role(
    node: &Node,
    role: &AccessRole,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let roles: Vec<Value> = node.client().get("/access/roles", &[]).await?;
    Ok(roles
        .iter()
        .find(|live| live["roleid"].as_str() == Some(role.roleid.as_str()))
        .map(|live| {
            let mut privs: Vec<&str> = live["privs"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .filter(|privilege| !privilege.is_empty())
                .collect();
            privs.sort_unstable();
            BTreeMap::from([("privs".to_owned(), json!(privs))])
        }))
}

const USER_TEXTS: [&str; 4] = ["comment", "email", "firstname", "lastname"];

fn user_desired(user: &AccessUser) -> BTreeMap<String, Value> {
    let mut fields = optional_texts(&[
        ("comment", user.comment.as_ref()),
        ("email", user.email.as_ref()),
        ("firstname", user.firstname.as_ref()),
        ("lastname", user.lastname.as_ref()),
    ]);
    if let Some(enable) = user.enable {
        fields.insert("enable".to_owned(), json!(enable));
    }
    if let Some(expire) = user.expire {
        fields.insert("expire".to_owned(), json!(expire));
    }
    if !user.groups.is_empty() {
        fields.insert("groups".to_owned(), json!(sorted(&user.groups)));
    }
    if user.password.is_some() {
        fields.insert("password".to_owned(), json!(PASSWORD_SET_AT_CREATION));
    }
    fields
}

/// Every user with its groups and tokens: one `GET /access/users?full=1`.
async fn users_listing(node: &Node) -> Result<Vec<Value>, ManagerError> {
    Ok(node.client().get("/access/users", &[("full", "1")]).await?)
}

fn find_user<'a>(users: &'a [Value], userid: &str) -> Option<&'a Value> {
    users.iter().find(|live| live["userid"].as_str() == Some(userid))
}

/// A user's groups: a list, or Proxmox's comma-separated text.
fn groups_of(live: &Value) -> Vec<&str> {
    match &live["groups"] {
        Value::Array(groups) => groups.iter().filter_map(Value::as_str).collect(),
        Value::String(text) => text.split(',').filter(|group| !group.is_empty()).collect(),
        _ => Vec::new(),
    }
}

async fn observe_user(
    node: &Node,
    user: &AccessUser,
) -> Result<Option<BTreeMap<String, Value>>, ManagerError> {
    let users = users_listing(node).await?;
    let Some(live) = find_user(&users, &user.userid) else {
        return Ok(None);
    };
    let mut fields = live_texts(live, &USER_TEXTS);
    fields.insert("enable".to_owned(), json!(flag_of(live, "enable", true)));
    fields.insert("expire".to_owned(), json!(live["expire"].as_u64().unwrap_or(0)));
    // Memberships the configuration does not name are not drift: they are kept.
    let live_groups = groups_of(live);
    let member: Vec<&str> = sorted(&user.groups)
        .into_iter()
        .filter(|group| live_groups.contains(group))
        .collect();
    if !user.groups.is_empty() {
        fields.insert("groups".to_owned(), json!(member));
    }
    if user.password.is_some() {
        fields.insert("password".to_owned(), json!(PASSWORD_SET_AT_CREATION));
    }
    Ok(Some(fields))
}

/// The form of a user's declared text fields, flags and expiry, those among `fields` (all on a create).
fn user_form(user: &AccessUser, fields: Option<&[&str]>) -> Form {
    let wanted = |key: &str| fields.is_none_or(|fields| fields.contains(&key));
    let mut form = Form::new();
    for (key, value) in [
        ("comment", &user.comment),
        ("email", &user.email),
        ("firstname", &user.firstname),
        ("lastname", &user.lastname),
    ] {
        if let Some(value) = value.as_ref().filter(|_| wanted(key)) {
            form = form.text(key, value);
        }
    }
    if let Some(enable) = user.enable.filter(|_| wanted("enable")) {
        form = form.flag("enable", enable);
    }
    if let Some(expire) = user.expire.filter(|_| wanted("expire")) {
        form = form.text("expire", expire.to_string());
    }
    form
}

async fn apply_user(
    node: &Node,
    user: &AccessUser,
    action: Action,
    fields: &[&str],
) -> Result<(), ManagerError> {
    let client = node.client();
    if action == Action::Create {
        let mut form = user_form(user, None).text("userid", &user.userid);
        if !user.groups.is_empty() {
            form = form.text("groups", sorted(&user.groups).join(","));
        }
        if let Some(secret) = &user.password {
            let password = resolve_secret(secret, &|name| std::env::var(name).ok(), node.config_dir())
                .map_err(|error| {
                    ManagerError::failed(format!(
                        "the password of {} could not be read: {error}",
                        user.userid
                    ))
                })?;
            form = form.text("password", password.expose());
        }
        let _: Value = client.post("/access/users", &form).await?;
        return Ok(());
    }
    let path = format!("/access/users/{}", user.userid);
    let mut form = user_form(user, Some(fields));
    let mut any = fields
        .iter()
        .any(|field| USER_TEXTS.contains(field) || ["enable", "expire"].contains(field));
    if fields.contains(&"groups") {
        // Only the missing memberships, appended: the user's other groups stay.
        let users = users_listing(node).await?;
        let live_groups = find_user(&users, &user.userid).map(groups_of).unwrap_or_default();
        let missing: Vec<&str> = sorted(&user.groups)
            .into_iter()
            .filter(|group| !live_groups.contains(group))
            .collect();
        if !missing.is_empty() {
            form = form.text("groups", missing.join(",")).flag("append", true);
            any = true;
        }
    }
    if any {
        let _: Value = client.put(&path, &form).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_read_as_a_list_or_as_text_and_flags_as_numbers_or_booleans() {
        assert_eq!(groups_of(&json!({"groups": "a,b"})), ["a", "b"]);
        assert_eq!(groups_of(&json!({"groups": ["a"]})), ["a"]);
        assert!(groups_of(&json!({})).is_empty());
        assert!(!flag_of(&json!({"enable": 0}), "enable", true));
        assert!(flag_of(&json!({"enable": true}), "enable", false));
        assert!(flag_of(&json!({}), "enable", true));
    }
}
