//! The `host/access/*` resources: Proxmox groups, roles, users, API tokens and ACL entries, built from
//! `proxmox_access`, with their order: groups and roles before the users and ACL entries that name them,
//! users before their tokens, tokens before the ACL entries that name them.

use serde::Serialize;

use crate::config::access::{AccessAcl, AccessGroup, AccessRole, AccessToken, AccessUser, ProxmoxAccess};
use crate::engine::address::Address;

/// One `host/access/*` resource, with the declaration it converges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessStep {
    /// A group, at `host/access/group/<groupid>`.
    Group(AccessGroup),
    /// A custom role, at `host/access/role/<roleid>`.
    Role(AccessRole),
    /// A user, at `host/access/user/<userid>`.
    User(AccessUser),
    /// An API token, at `host/access/token/<userid>!<tokenid>`.
    Token(AccessToken),
    /// Every declared ACL entry, at `host/access/acl`.
    Acl(AclEntries),
}

/// The declared ACL items, converged as one resource: Proxmox keeps the ACL as one list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclEntries {
    /// The items as declared.
    pub acls: Vec<AccessAcl>,
}

impl AccessStep {
    /// The declaration as JSON, as the hypervisor file writes it.
    pub(crate) fn declared_value(&self) -> serde_json::Value {
        let value = match self {
            AccessStep::Group(group) => serde_json::to_value(group),
            AccessStep::Role(role) => serde_json::to_value(role),
            AccessStep::User(user) => serde_json::to_value(user),
            AccessStep::Token(token) => serde_json::to_value(token),
            AccessStep::Acl(entries) => serde_json::to_value(entries),
        };
        value.expect("configuration types serialise to JSON")
    }
}

fn group_address(groupid: &str) -> Address {
    Address::Host(format!("access/group/{groupid}"))
}

fn role_address(roleid: &str) -> Address {
    Address::Host(format!("access/role/{roleid}"))
}

fn user_address(userid: &str) -> Address {
    Address::Host(format!("access/user/{userid}"))
}

fn token_address(full_id: &str) -> Address {
    Address::Host(format!("access/token/{full_id}"))
}

/// The access resources of `access`: `(address, depends_on, step)`. An edge is drawn only to what is
/// declared; a name that is not (a built-in role, a user made by hand) is Proxmox's to know.
pub(crate) fn access_steps(access: &ProxmoxAccess) -> Vec<(Address, Vec<Address>, AccessStep)> {
    let groups = |names: &[String]| -> Vec<Address> {
        names
            .iter()
            .filter(|name| access.groups.iter().any(|group| &group.groupid == *name))
            .map(|name| group_address(name))
            .collect()
    };
    let users = |names: &[String]| -> Vec<Address> {
        names
            .iter()
            .filter(|name| access.users.iter().any(|user| &user.userid == *name))
            .map(|name| user_address(name))
            .collect()
    };
    let mut steps = Vec::new();
    for group in &access.groups {
        steps.push((
            group_address(&group.groupid),
            Vec::new(),
            AccessStep::Group(group.clone()),
        ));
    }
    for role in &access.roles {
        steps.push((
            role_address(&role.roleid),
            Vec::new(),
            AccessStep::Role(role.clone()),
        ));
    }
    for user in &access.users {
        steps.push((
            user_address(&user.userid),
            groups(&user.groups),
            AccessStep::User(user.clone()),
        ));
    }
    for token in &access.tokens {
        steps.push((
            token_address(&token.full_id()),
            users(std::slice::from_ref(&token.userid)),
            AccessStep::Token(token.clone()),
        ));
    }
    if !access.acls.is_empty() {
        let mut depends_on = Vec::new();
        for acl in &access.acls {
            depends_on.extend(groups(&acl.groups));
            depends_on.extend(users(&acl.users));
            depends_on.extend(
                acl.roles
                    .iter()
                    .filter(|name| access.roles.iter().any(|role| &role.roleid == *name))
                    .map(|name| role_address(name)),
            );
            depends_on.extend(
                acl.tokens
                    .iter()
                    .filter(|name| access.tokens.iter().any(|token| &token.full_id() == *name))
                    .map(|name| token_address(name)),
            );
        }
        depends_on.sort();
        depends_on.dedup();
        steps.push((
            Address::Host("access/acl".into()),
            depends_on,
            AccessStep::Acl(AclEntries {
                acls: access.acls.clone(),
            }),
        ));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_go_to_what_is_declared_only() {
        let access: ProxmoxAccess = serde_json::from_value(serde_json::json!({
            "groups": [{ "groupid": "ops" }],
            "roles": [{ "roleid": "Deploy", "privs": ["VM.Audit"] }],
            "users": [{ "userid": "deploy@pve", "groups": ["ops", "made-by-hand"] }],
            "tokens": [
                { "userid": "deploy@pve", "tokenid": "ci", "secret_file": "/run/ci" },
                { "userid": "root@pam", "tokenid": "backup", "secret_file": "/run/backup" }
            ],
            "acls": [
                { "path": "/", "roles": ["Deploy", "PVEAuditor"], "tokens": ["deploy@pve!ci"] },
                { "path": "/vms", "roles": ["PVEVMAdmin"], "groups": ["ops"], "users": ["alice@pam"] }
            ]
        }))
        .expect("a declaration");
        let edges: Vec<(String, Vec<String>)> = access_steps(&access)
            .into_iter()
            .map(|(address, depends_on, _)| {
                (
                    address.to_string(),
                    depends_on.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        let edge = |address: &str, depends: &[&str]| {
            (
                address.to_owned(),
                depends.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            edges,
            [
                edge("host/access/group/ops", &[]),
                edge("host/access/role/Deploy", &[]),
                edge("host/access/user/deploy@pve", &["host/access/group/ops"]),
                edge(
                    "host/access/token/deploy@pve!ci",
                    &["host/access/user/deploy@pve"]
                ),
                edge("host/access/token/root@pam!backup", &[]),
                edge(
                    "host/access/acl",
                    &[
                        "host/access/group/ops",
                        "host/access/role/Deploy",
                        "host/access/token/deploy@pve!ci"
                    ]
                ),
            ]
        );
    }
}
