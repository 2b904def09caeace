//! Data-driven diff tests: a live state written as JSON with edits laid over it, and changes rendered one
//! line per field, so a test reads as configuration and live state in, expected changes out.

use phoenix_core::{Change, Observed};
use serde_json::Value;

/// The live state `live` (a JSON object of field name to value) with `edits` laid over it: a value
/// replaces, `null` removes.
pub fn edited(live: &str, edits: &str) -> Observed {
    let mut fields: serde_json::Map<String, Value> = serde_json::from_str(live).expect("live state is JSON");
    let edits: serde_json::Map<String, Value> = serde_json::from_str(edits).expect("edits are JSON");
    for (key, value) in edits {
        match value {
            Value::Null => fields.remove(&key),
            value => fields.insert(key, value),
        };
    }
    Observed::new(fields.into_iter().collect())
}

/// Changes as a snapshot reads them: each change's action and worst consequence, then one line per field,
/// `name: old -> new [consequence]` (`-` for an absent value); `no changes` when there are none.
pub fn render(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_owned();
    }
    let show = |value: Option<&Value>| value.map_or("-".to_owned(), Value::to_string);
    let mut out = String::new();
    for change in changes {
        out.push_str(&format!("{:?} ({:?})\n", change.action, change.consequence()));
        for field in &change.fields {
            out.push_str(&format!(
                "  {}: {} -> {} [{:?}]\n",
                field.field,
                show(field.old.as_ref()),
                show(field.new.as_ref()),
                field.consequence
            ));
        }
    }
    out
}
