//! `proxmox_access` in the hypervisor file: Proxmox VE users, groups, roles, ACL entries and API tokens
//! (`/access/*`), and the names Proxmox itself knows (privileges, built-in roles), carried as data so that
//! validation can check them offline.

use serde::{Deserialize, Serialize};

use super::common::Secret;

/// Proxmox VE access management: what Phoenix creates and keeps as declared. Nothing undeclared is touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxmoxAccess {
    /// Groups (`/access/groups`).
    #[serde(default)]
    pub groups: Vec<AccessGroup>,
    /// Custom roles (`/access/roles`); the built-in ones exist already and cannot be changed.
    #[serde(default)]
    pub roles: Vec<AccessRole>,
    /// Users (`/access/users`).
    #[serde(default)]
    pub users: Vec<AccessUser>,
    /// API tokens of users (`/access/users/{userid}/token/{tokenid}`).
    #[serde(default)]
    pub tokens: Vec<AccessToken>,
    /// ACL entries (`/access/acl`).
    #[serde(default)]
    pub acls: Vec<AccessAcl>,
}

/// A Proxmox group.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessGroup {
    /// Group name (`ops`).
    pub groupid: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A custom Proxmox role: a named set of privileges.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRole {
    /// Role name (`PhoenixDeploy`).
    pub roleid: String,
    /// Privileges (`VM.Audit`); the role has exactly these.
    #[serde(default)]
    pub privs: Vec<String>,
}

/// A Proxmox user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessUser {
    /// `name@realm` (`deploy@pve`).
    pub userid: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// First name.
    #[serde(default)]
    pub firstname: Option<String>,
    /// Last name.
    #[serde(default)]
    pub lastname: Option<String>,
    /// Whether the account may log in.
    #[serde(default)]
    pub enable: Option<bool>,
    /// Expiry as seconds since the epoch; 0 is never.
    #[serde(default)]
    pub expire: Option<u64>,
    /// Groups the user is a member of (memberships are added, never removed).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Password, set when the user is created (realm `pve` only); a reference, never inline.
    #[serde(default)]
    pub password: Option<Secret>,
}

impl AccessUser {
    /// The realm: what follows the last `@`.
    pub fn realm(&self) -> &str {
        self.userid.rsplit_once('@').map_or("", |(_, realm)| realm)
    }
}

/// An API token of a user. Its secret exists only when it is created: Phoenix writes it to `secret_file`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessToken {
    /// The user who owns the token (`deploy@pve`).
    pub userid: String,
    /// Token name (`phoenix`); the full id is `userid!tokenid`.
    pub tokenid: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
    /// Privilege separation: the token has only the privileges ACL entries give the token itself.
    #[serde(default)]
    pub privsep: Option<bool>,
    /// Expiry as seconds since the epoch; 0 is never.
    #[serde(default)]
    pub expire: Option<u64>,
    /// Absolute path, on the machine running Phoenix, of the file the secret is written to at creation (mode 0600).
    pub secret_file: String,
}

impl AccessToken {
    /// `userid!tokenid`, as ACL entries and the API name it.
    pub fn full_id(&self) -> String {
        format!("{}!{}", self.userid, self.tokenid)
    }
}

/// ACL entries: each role on `path` for each user, group and token named.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessAcl {
    /// ACL path (`/`, `/vms/100`, `/storage/local`).
    pub path: String,
    /// Roles granted.
    pub roles: Vec<String>,
    /// Users granted them.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups granted them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Tokens granted them (`user@realm!tokenid`).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Whether the entries apply below `path` too (Proxmox's default: yes).
    #[serde(default)]
    pub propagate: Option<bool>,
}

impl AccessAcl {
    /// The path as Proxmox keeps it: one leading slash, no empty segments, no trailing slash.
    pub fn normalized_path(&self) -> String {
        let segments: Vec<&str> = self
            .path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();
        format!("/{}", segments.join("/"))
    }

    /// Whether the entries propagate (Proxmox's default is yes).
    pub fn propagates(&self) -> bool {
        self.propagate.unwrap_or(true)
    }
}

/// Every privilege of Proxmox VE 9, as `/access/roles` accepts them.
pub const PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// The roles every Proxmox VE node has; they cannot be created, changed or deleted.
pub const BUILTIN_ROLES: &[&str] = &[
    "Administrator",
    "NoAccess",
    "PVEAdmin",
    "PVEAuditor",
    "PVEDatastoreAdmin",
    "PVEDatastoreUser",
    "PVEMappingAdmin",
    "PVEMappingUser",
    "PVEPoolAdmin",
    "PVEPoolUser",
    "PVESDNAdmin",
    "PVESDNUser",
    "PVESysAdmin",
    "PVETemplateUser",
    "PVEUserAdmin",
    "PVEVMAdmin",
    "PVEVMUser",
];
