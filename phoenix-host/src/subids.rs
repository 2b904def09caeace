//! `host/subids`: the `/etc/subuid` and `/etc/subgid` ranges root needs for the containers' `id_maps`,
//! through the host channel. A range is there when one of root's entries covers it; a missing one is
//! appended. Entries Phoenix did not write are never changed or removed.

use std::collections::BTreeMap;

use phoenix_core::{ManagerError, SubIds};
use serde_json::{Value, json};

use crate::node::Node;

/// Both files, with the field each is compared as.
const FILES: [(&str, &str); 2] = [("uids", "/etc/subuid"), ("gids", "/etc/subgid")];

fn ranges(ids: &SubIds, field: &str) -> Vec<(u32, u32)> {
    if field == "uids" {
        ids.uids.clone()
    } else {
        ids.gids.clone()
    }
}

fn line((first, count): (u32, u32)) -> String {
    format!("root:{first}:{count}")
}

/// The declared fields: each file's needed ranges, as `root:first:count`.
pub(crate) fn desired(ids: &SubIds) -> BTreeMap<String, Value> {
    FILES
        .iter()
        .map(|(field, _)| {
            let lines: Vec<String> = ranges(ids, field).into_iter().map(line).collect();
            ((*field).to_owned(), json!(lines))
        })
        .collect()
}

/// root's ranges in a subordinate ID file.
fn roots(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|entry| {
            let mut parts = entry.trim().split(':');
            let (owner, first, count) = (parts.next()?, parts.next()?, parts.next()?);
            (owner == "root" || owner == "0").then_some((first.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

fn covered(have: &[(u64, u64)], (first, count): (u32, u32)) -> bool {
    let (first, end) = (u64::from(first), u64::from(first) + u64::from(count));
    have.iter()
        .any(|(start, size)| *start <= first && end <= start + size)
}

/// Which of the needed ranges the node's files cover, per field.
pub(crate) async fn observe(node: &Node, ids: &SubIds) -> Result<BTreeMap<String, Value>, ManagerError> {
    let mut fields = BTreeMap::new();
    for (field, path) in FILES {
        let have = roots(&node.read_file(path).await?.unwrap_or_default());
        let present: Vec<String> = ranges(ids, field)
            .into_iter()
            .filter(|range| covered(&have, *range))
            .map(line)
            .collect();
        fields.insert(field.to_owned(), json!(present));
    }
    Ok(fields)
}

/// Appends the missing ranges to each file, keeping what is there.
pub(crate) async fn apply(node: &Node, ids: &SubIds) -> Result<(), ManagerError> {
    for (field, path) in FILES {
        let mut text = node.read_file(path).await?.unwrap_or_default();
        let have = roots(&text);
        let missing: Vec<String> = ranges(ids, field)
            .into_iter()
            .filter(|range| !covered(&have, *range))
            .map(line)
            .collect();
        if missing.is_empty() {
            continue;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for entry in missing {
            text.push_str(&entry);
            text.push('\n');
        }
        node.write_file(path, &text, "0644", None).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_there_when_one_of_roots_entries_covers_it() {
        let have = roots("root:100000:65536\nalice:165536:65536\n0:1000:10\nbroken\n");
        assert_eq!(have, [(100_000, 65_536), (1000, 10)]);
        assert!(covered(&have, (100_000, 65_536)));
        assert!(covered(&have, (1005, 5)));
        assert!(!covered(&have, (1005, 6)));
        assert!(!covered(&have, (165_536, 1)), "alice's range is not root's");
    }
}
