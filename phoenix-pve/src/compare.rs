//! Comparisons both managers make between declared and live fields, in the shapes they normalise to.

use serde_json::Value;

/// For a property-string field compared on the declared keys only: `None` when every declared key has
/// its value live; otherwise the complete value to write, the live map with the declared keys laid over it
/// (so keys Proxmox fills in by itself, such as a generated MAC address, are kept).
pub fn overlay(live: Option<&Value>, declared: &Value) -> Option<Value> {
    let mut merged = live.and_then(Value::as_object).cloned().unwrap_or_default();
    let declared = declared.as_object()?;
    if declared.iter().all(|(key, value)| merged.get(key) == Some(value)) {
        return None;
    }
    merged.extend(declared.clone());
    Some(Value::Object(merged))
}

/// For names that must exist (snapshots): `None` when all do; otherwise the live names plus the missing ones.
pub fn with_missing(live: Option<&Value>, wanted: &Value) -> Option<Value> {
    let have: Vec<&Value> = live
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    let missing: Vec<Value> = wanted
        .as_array()
        .into_iter()
        .flatten()
        .filter(|name| !have.contains(name))
        .cloned()
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut all: Vec<Value> = have.into_iter().cloned().collect();
    all.extend(missing);
    Some(Value::Array(all))
}

/// The names in `new` that `old` lacks: the snapshots an apply takes.
pub fn added_names(old: Option<&Value>, new: &Value) -> Vec<String> {
    let have: Vec<&Value> = old
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default();
    new.as_array()
        .into_iter()
        .flatten()
        .filter(|name| !have.contains(name))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// For sizes in GiB, which are minimums: whether the live size is below the declared one. Proxmox grows
/// disks but cannot shrink them, so a larger disk (grown by hand, or cloned from a larger source) is fine.
pub fn must_grow(live: Option<&Value>, wanted: &Value) -> bool {
    let have = live.and_then(Value::as_f64).unwrap_or(0.0);
    wanted.as_f64().is_some_and(|want| want > have + 0.01)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn overlay_keeps_undeclared_keys() {
        let live = json!({"name": "eth0", "hwaddr": "BC:24:11:00:00:01", "ip": "dhcp"});
        assert_eq!(overlay(Some(&live), &json!({"ip": "dhcp"})), None);
        assert_eq!(
            overlay(Some(&live), &json!({"ip": "10.0.0.5/24"})),
            Some(json!({"name": "eth0", "hwaddr": "BC:24:11:00:00:01", "ip": "10.0.0.5/24"}))
        );
    }

    #[test]
    fn missing_names_are_added() {
        assert_eq!(with_missing(Some(&json!(["a"])), &json!(["a"])), None);
        assert_eq!(
            with_missing(Some(&json!(["a"])), &json!(["b"])),
            Some(json!(["a", "b"]))
        );
        assert_eq!(with_missing(None, &json!(["b"])), Some(json!(["b"])));
    }

    #[test]
    fn sizes_only_grow() {
        assert!(must_grow(Some(&json!(8.0)), &json!(16.0)));
        assert!(!must_grow(Some(&json!(50.0)), &json!(32.0)));
        assert!(!must_grow(Some(&json!(16.0)), &json!(16.0)));
    }
}
