//! Proxmox tasks: UPIDs and their outcome.

use std::fmt;

/// A task id, `UPID:node:pid:pstart:starttime:type:id:user:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    raw: String,
    node: String,
    kind: String,
    id: String,
}

impl Upid {
    /// Parses a UPID; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Upid> {
        let mut parts = text.split(':');
        if parts.next()? != "UPID" {
            return None;
        }
        let node = parts.next()?.to_owned();
        let (_pid, _pstart, _start) = (parts.next()?, parts.next()?, parts.next()?);
        let kind = parts.next()?.to_owned();
        let id = parts.next()?.to_owned();
        parts.next()?;
        if node.is_empty() || kind.is_empty() {
            return None;
        }
        Some(Upid {
            raw: text.to_owned(),
            node,
            kind,
            id,
        })
    }

    /// The node the task runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The task type (`vzcreate`, `qmstart`, ...).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The object it works on (a VMID), possibly empty.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The UPID as Proxmox wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How a task that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// It finished with `OK` or `WARNINGS: n`.
    Finished {
        /// The task.
        upid: Upid,
        /// The number of warnings (0 for `OK`).
        warnings: u32,
    },
    /// A retried dispatch found the work already done; there is no task to wait for.
    AlreadyDone,
}

/// Reads an exit status: `Ok(warnings)` for success, `Err(status)` for failure.
pub(crate) fn exit_status(status: &str) -> Result<u32, &str> {
    if status == "OK" {
        return Ok(0);
    }
    if let Some(count) = status.strip_prefix("WARNINGS: ") {
        return count.trim().parse().map_err(|_| status);
    }
    Err(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upids_parse() {
        let upid = Upid::parse("UPID:pve1:000003E8:00001B58:6745A2C1:vzcreate:101:root@pam!phoenix:")
            .expect("a UPID");
        assert_eq!((upid.node(), upid.kind(), upid.id()), ("pve1", "vzcreate", "101"));
        assert_eq!(
            upid.to_string(),
            "UPID:pve1:000003E8:00001B58:6745A2C1:vzcreate:101:root@pam!phoenix:"
        );
        assert_eq!(Upid::parse("not a upid"), None);
        assert_eq!(Upid::parse("UPID:pve1:1:2"), None);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status("OK"), Ok(0));
        assert_eq!(exit_status("WARNINGS: 3"), Ok(3));
        assert_eq!(
            exit_status("command 'lxc-start' failed: exit code 1"),
            Err("command 'lxc-start' failed: exit code 1")
        );
    }
}
