//! `proxmox_access`: what Proxmox would refuse, found offline. User ids are `name@realm`; a password is
//! set only in the `pve` realm; privileges are Proxmox VE 9's; an ACL names declared or built-in roles; a
//! declared role is not a built-in one; every id is declared once.

use std::collections::BTreeSet;

use crate::config::FileKind;
use crate::config::access::{BUILTIN_ROLES, PRIVILEGES, ProxmoxAccess};
use crate::config::hypervisor::HypervisorFile;
use crate::lint::diagnostic::Problem;
use crate::lint::suggest::did_you_mean;

/// Checks `proxmox_access`.
pub(crate) fn check(hypervisor: &HypervisorFile, problems: &mut Vec<Problem>) {
    let Some(access) = &hypervisor.proxmox_access else {
        return;
    };
    check_users(access, problems);
    check_roles(access, problems);
    check_tokens(access, problems);
    check_acls(access, problems);
}

/// Why a user id is not `name@realm`, in Proxmox's terms, or `None` when it is.
fn userid_problem(userid: &str) -> Option<String> {
    let Some((name, realm)) = userid.rsplit_once('@') else {
        return Some(format!(
            "`{userid}` names no realm: a Proxmox user id is `name@realm`"
        ));
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == ':' || c == '/') {
        return Some(format!(
            "`{userid}`: the name before `@` must be non-empty, without spaces, `:` or `/`"
        ));
    }
    if !is_realm(realm) {
        return Some(format!(
            "`{realm}` in `{userid}` is not a realm name: a letter, then at least one letter, digit, `.`, `-` or `_`"
        ));
    }
    if userid.len() > 64 {
        return Some(format!("`{userid}` is longer than Proxmox's 64 characters"));
    }
    None
}

fn is_realm(realm: &str) -> bool {
    let mut chars = realm.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic())
        && realm.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn bad_userid(pointer: String, message: String) -> Problem {
    Problem::error(
        "phoenix::access::bad_userid",
        FileKind::Hypervisor,
        pointer,
        message,
    )
    .with_label("not `name@realm`")
    .with_help("write the user as `name@realm`, such as `deploy@pve` or `alice@pam`")
}

fn duplicate(pointer: String, what: &str, id: &str) -> Problem {
    Problem::error(
        "phoenix::access::duplicate",
        FileKind::Hypervisor,
        pointer,
        format!("{what} `{id}` is declared twice"),
    )
    .with_label("declared again")
    .with_help("declare each one once")
}

fn check_users(access: &ProxmoxAccess, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (index, user) in access.users.iter().enumerate() {
        let pointer = format!("/proxmox_access/users/{index}/userid");
        if let Some(message) = userid_problem(&user.userid) {
            problems.push(bad_userid(pointer.clone(), message));
        }
        if !seen.insert(user.userid.as_str()) {
            problems.push(duplicate(pointer, "user", &user.userid));
        }
        if user.password.is_some() && user.realm() != "pve" && userid_problem(&user.userid).is_none() {
            problems.push(
                Problem::error(
                    "phoenix::access::password_realm",
                    FileKind::Hypervisor,
                    format!("/proxmox_access/users/{index}/password"),
                    format!(
                        "`{}` is in realm `{}`, whose passwords Proxmox does not keep",
                        user.userid,
                        user.realm()
                    ),
                )
                .with_label("only for realm `pve`")
                .with_help("set the password where the realm keeps it (`passwd` for `pam`, the directory for LDAP), or use a `@pve` user"),
            );
        }
    }
    let mut groups = BTreeSet::new();
    for (index, group) in access.groups.iter().enumerate() {
        if !groups.insert(group.groupid.as_str()) {
            let pointer = format!("/proxmox_access/groups/{index}/groupid");
            problems.push(duplicate(pointer, "group", &group.groupid));
        }
    }
}

fn check_roles(access: &ProxmoxAccess, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (index, role) in access.roles.iter().enumerate() {
        let pointer = format!("/proxmox_access/roles/{index}/roleid");
        if BUILTIN_ROLES.contains(&role.roleid.as_str()) {
            problems.push(
                Problem::error(
                    "phoenix::access::builtin_role",
                    FileKind::Hypervisor,
                    pointer.clone(),
                    format!(
                        "`{}` is a built-in Proxmox role, which cannot be changed",
                        role.roleid
                    ),
                )
                .with_label("built in")
                .with_help(
                    "name your role differently, or grant the built-in role in `acls` without declaring it",
                ),
            );
        } else if !seen.insert(role.roleid.as_str()) {
            problems.push(duplicate(pointer, "role", &role.roleid));
        }
        for (priv_index, privilege) in role.privs.iter().enumerate() {
            if PRIVILEGES.contains(&privilege.as_str()) {
                continue;
            }
            let problem = Problem::error(
                "phoenix::access::unknown_privilege",
                FileKind::Hypervisor,
                format!("/proxmox_access/roles/{index}/privs/{priv_index}"),
                format!("`{privilege}` is not a Proxmox VE privilege"),
            )
            .with_label("unknown privilege");
            problems.push(match did_you_mean(privilege, PRIVILEGES.iter().copied()) {
                Some(near) => problem.with_help(format!("did you mean `{near}`?")),
                None => problem.with_help(
                    "privileges are named like `VM.Audit`, `Datastore.AllocateSpace`, `Sys.Modify`",
                ),
            });
        }
    }
}

fn check_tokens(access: &ProxmoxAccess, problems: &mut Vec<Problem>) {
    let mut seen = BTreeSet::new();
    for (index, token) in access.tokens.iter().enumerate() {
        let pointer = format!("/proxmox_access/tokens/{index}/userid");
        if let Some(message) = userid_problem(&token.userid) {
            problems.push(bad_userid(pointer, message));
        }
        if !seen.insert(token.full_id()) {
            let pointer = format!("/proxmox_access/tokens/{index}/tokenid");
            problems.push(duplicate(pointer, "token", &token.full_id()));
        }
    }
}

fn check_acls(access: &ProxmoxAccess, problems: &mut Vec<Problem>) {
    let declared: Vec<&str> = access.roles.iter().map(|role| role.roleid.as_str()).collect();
    for (index, acl) in access.acls.iter().enumerate() {
        let base = format!("/proxmox_access/acls/{index}");
        for (role_index, role) in acl.roles.iter().enumerate() {
            if declared.contains(&role.as_str()) || BUILTIN_ROLES.contains(&role.as_str()) {
                continue;
            }
            let known = declared.iter().chain(BUILTIN_ROLES).copied();
            let problem = Problem::error(
                "phoenix::access::unknown_role",
                FileKind::Hypervisor,
                format!("{base}/roles/{role_index}"),
                format!(
                    "the ACL on `{}` grants `{role}`, which is neither declared in `roles` nor built in",
                    acl.path
                ),
            )
            .with_label("unknown role");
            problems.push(match did_you_mean(role, known) {
                Some(near) => problem.with_help(format!("did you mean `{near}`?")),
                None => problem.with_help("declare the role in `proxmox_access.roles`, or grant a built-in one such as `PVEVMAdmin`"),
            });
        }
        for (user_index, user) in acl.users.iter().enumerate() {
            if let Some(message) = userid_problem(user) {
                problems.push(bad_userid(format!("{base}/users/{user_index}"), message));
            }
        }
        for (token_index, token) in acl.tokens.iter().enumerate() {
            let user = token.split_once('!').map_or(token.as_str(), |(user, _)| user);
            let problem = if token.contains('!') {
                userid_problem(user)
            } else {
                Some(format!("`{token}` is not a token id: write `name@realm!tokenid`"))
            };
            if let Some(message) = problem {
                problems.push(bad_userid(format!("{base}/tokens/{token_index}"), message));
            }
        }
        if acl.users.is_empty() && acl.groups.is_empty() && acl.tokens.is_empty() {
            problems.push(
                Problem::error(
                    "phoenix::access::acl_without_subject",
                    FileKind::Hypervisor,
                    base,
                    format!("the ACL on `{}` grants its roles to nobody", acl.path),
                )
                .on_key()
                .with_label("no users, groups or tokens")
                .with_help("name at least one of `users`, `groups` or `tokens`"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_need_a_name_and_a_realm() {
        assert_eq!(userid_problem("deploy@pve"), None);
        assert_eq!(userid_problem("a@b@pam"), None);
        assert!(userid_problem("deploy").is_some_and(|message| message.contains("no realm")));
        assert!(userid_problem("@pve").is_some());
        assert!(userid_problem("de ploy@pve").is_some());
        assert!(userid_problem("deploy@p").is_some_and(|message| message.contains("not a realm")));
        assert!(userid_problem("deploy@1dap").is_some());
    }
}
