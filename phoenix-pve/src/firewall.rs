//! Guest firewalls through the API: options and rules, compared by content and converged with the fewest
//! writes (delete what is not wanted, move what is out of place, insert what is missing). The rules are
//! never all deleted and re-added.

use phoenix_core::config::firewall::canonical_macro;
use phoenix_core::config::{Direction, FirewallRule};
use serde_json::{Map, Value, json};

use crate::client::{Client, Form};
use crate::error::PveError;

/// The keys of a rule Phoenix declares and compares.
/// Keys Phoenix does not declare (`iface`, `icmp-type`, `log`) are compared too: a live rule that
/// has one is a different rule from a declared one that has not.
const RULE_KEYS: &[&str] = &[
    "type",
    "action",
    "proto",
    "dport",
    "sport",
    "source",
    "dest",
    "comment",
    "enable",
    "macro",
    "iface",
    "icmp-type",
    "log",
];

/// A declared rule as Proxmox stores it (`port` becomes `dport`; a rule is enabled unless it says not).
pub fn rule_value(rule: &FirewallRule) -> Value {
    let mut map = Map::new();
    map.insert(
        "type".into(),
        json!(match rule.direction {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Group => "group",
        }),
    );
    map.insert("action".into(), json!(rule.action.as_str()));
    if let Some(name) = &rule.macro_name {
        // Proxmox stores a macro spelt its own way (`ssh` becomes `SSH`).
        map.insert(
            "macro".into(),
            json!(canonical_macro(name).unwrap_or(name.as_str())),
        );
    }
    let optional = [
        (
            "proto",
            rule.proto.as_ref().map(|proto| proto.to_ascii_lowercase()),
        ),
        ("dport", rule.port.clone()),
        ("sport", rule.sport.clone()),
        ("source", rule.source.clone()),
        ("dest", rule.dest.clone()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            map.insert(key.into(), json!(value.replace(' ', "")));
        }
    }
    if let Some(comment) = &rule.comment {
        // Proxmox trims comments and drops empty ones.
        let comment = comment.trim();
        if !comment.is_empty() {
            map.insert("comment".into(), json!(comment));
        }
    }
    map.insert("enable".into(), json!(i64::from(rule.enabled.unwrap_or(true))));
    Value::Object(map)
}

/// A rule read from Proxmox, reduced to the compared keys.
fn normalise(rule: &Value) -> Value {
    let mut map = Map::new();
    for key in RULE_KEYS {
        let Some(value) = rule.get(*key).filter(|value| !value.is_null()) else {
            continue;
        };
        let value = match *key {
            "enable" => json!(
                value
                    .as_i64()
                    .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
                    .unwrap_or(0)
            ),
            "proto" => json!(value.as_str().unwrap_or_default().to_ascii_lowercase()),
            _ => value.clone(),
        };
        map.insert((*key).to_owned(), value);
    }
    if !map.contains_key("enable") {
        map.insert("enable".into(), json!(0));
    }
    Value::Object(map)
}

/// Reads whether the firewall is on and its rules, in order.
pub async fn read(client: &Client, base: &str) -> Result<(bool, Vec<Value>), PveError> {
    let options: Value = client.get(&format!("{base}/firewall/options"), &[]).await?;
    let enabled = is_enabled(&options);
    Ok((enabled, rules(client, base).await?))
}

/// Whether firewall options (`GET .../firewall/options`) say it is on.
pub fn is_enabled(options: &Value) -> bool {
    options["enable"]
        .as_i64()
        .or_else(|| options["enable"].as_str().and_then(|text| text.parse().ok()))
        == Some(1)
}

/// Reads the rules, in order, reduced to the compared keys.
pub async fn rules(client: &Client, base: &str) -> Result<Vec<Value>, PveError> {
    rule_list(client, &format!("{base}/firewall/rules")).await
}

/// Reads the rules of the list at `path` (`/cluster/firewall/groups/{group}`), in order, reduced to the
/// compared keys.
pub async fn rule_list(client: &Client, path: &str) -> Result<Vec<Value>, PveError> {
    let rules: Vec<Value> = client.get(path, &[]).await?;
    Ok(rules.iter().map(normalise).collect())
}

/// The guest firewall part of one update, gathered field by field and carried out rules first, then the
/// enable flag, so that a firewall turned on never runs without its rules.
#[derive(Debug, Default)]
pub struct FirewallUpdate {
    enabled: Option<bool>,
    rules: Option<(Vec<Value>, Vec<Value>)>,
}

impl FirewallUpdate {
    /// The firewall is to be on (`true`) or off.
    pub fn enable(&mut self, new: &Value) {
        self.enabled = Some(new == true);
    }

    /// The rules are to go from `old` (as read) to `new`, both lists of [`rule_value`]s.
    pub fn rules(&mut self, old: Option<&Value>, new: &Value) {
        let list = |value: Option<&Value>| value.and_then(Value::as_array).cloned().unwrap_or_default();
        self.rules = Some((list(old), list(Some(new))));
    }

    /// Carries the changes out on the guest at `base` (`/nodes/{node}/lxc/{vmid}`).
    pub async fn apply(self, client: &Client, base: &str) -> Result<(), PveError> {
        if let Some((live, wanted)) = self.rules {
            converge_rules(client, base, &live, &wanted).await?;
        }
        if let Some(enabled) = self.enabled {
            set_enabled(client, base, enabled).await?;
        }
        Ok(())
    }
}

/// Turns the firewall on or off.
pub async fn set_enabled(client: &Client, base: &str, enabled: bool) -> Result<(), PveError> {
    let _: Value = client
        .put(
            &format!("{base}/firewall/options"),
            &Form::new().flag("enable", enabled),
        )
        .await?;
    Ok(())
}

/// Reads the rules again before a positional write and checks that they are still `expected`. Returns the
/// list's digest, which the write carries: Proxmox refuses it if the list changed in between, so a rule
/// someone else added or moved is never deleted or moved by position by mistake.
async fn digest_if_unchanged(client: &Client, rules: &str, expected: &[Value]) -> Result<String, PveError> {
    let live: Vec<Value> = client.get(rules, &[]).await?;
    let normalised: Vec<Value> = live.iter().map(normalise).collect();
    if normalised != expected {
        return Err(PveError::Changed {
            path: rules.to_owned(),
            detail: format!(
                "{} rules where {} were expected",
                normalised.len(),
                expected.len()
            ),
        });
    }
    Ok(live
        .first()
        .and_then(|rule| rule["digest"].as_str())
        .unwrap_or_default()
        .to_owned())
}

/// Adds `digest` to a form when there is one (an empty list has none).
fn with_digest(form: Form, digest: &str) -> Form {
    if digest.is_empty() {
        form
    } else {
        form.text("digest", digest)
    }
}

/// Inserts `rule` (Proxmox puts it at the top) into a list that is `before`. A `POST` that failed on the
/// way (a dropped connection, a 5xx) may or may not have gone in: the list is read back, and the rule is
/// sent again only if the list is still exactly `before`; a list that now starts with the rule over
/// `before` means it went in. Anything else is someone else's change, and nothing is guessed.
async fn insert(
    client: &Client,
    rules: &str,
    form: &Form,
    rule: &Value,
    before: &[Value],
) -> Result<(), PveError> {
    let policy = &client.settings().retry;
    let mut attempt = 1;
    loop {
        let error = match client.post::<Value>(rules, form).await {
            Ok(_) => return Ok(()),
            Err(error) if phoenix_core::Retryable::is_transient(&error) && attempt < policy.attempts => error,
            Err(error) => return Err(error),
        };
        let live: Vec<Value> = client.get(rules, &[]).await?;
        let live: Vec<Value> = live.iter().map(normalise).collect();
        if live.len() == before.len() + 1 && live[0] == *rule && live[1..] == *before {
            tracing::debug!(%error, "the rule went in although its answer was lost");
            return Ok(());
        }
        if live != before {
            return Err(error);
        }
        tracing::debug!(attempt, %error, "the rule did not go in; sending it again");
        if phoenix_core::engine::journal::pause(policy.delay(attempt))
            .await
            .is_err()
        {
            return Err(error);
        }
        attempt += 1;
    }
}

/// Which items of `sequence` form one longest strictly increasing subsequence.
fn longest_increasing(sequence: &[usize]) -> Vec<bool> {
    // For each item, the length of the longest run ending there and the item before it in that run.
    let mut length = vec![1usize; sequence.len()];
    let mut previous: Vec<Option<usize>> = vec![None; sequence.len()];
    for at in 0..sequence.len() {
        for before in 0..at {
            if sequence[before] < sequence[at] && length[before] + 1 > length[at] {
                length[at] = length[before] + 1;
                previous[at] = Some(before);
            }
        }
    }
    let mut chosen = vec![false; sequence.len()];
    let mut at = (0..sequence.len()).max_by_key(|&at| (length[at], std::cmp::Reverse(at)));
    while let Some(item) = at {
        chosen[item] = true;
        at = previous[item];
    }
    chosen
}

/// Takes the rules from `live` to `wanted`. Returns the number of writes made.
///
/// Every write by position first checks, by digest, that the list is the one Phoenix expects
/// ([`PveError::Changed`] otherwise), so a concurrent edit stops the convergence instead of misplacing it.
pub async fn converge_rules(
    client: &Client,
    base: &str,
    live: &[Value],
    wanted: &[Value],
) -> Result<usize, PveError> {
    converge_rule_list(client, &format!("{base}/firewall/rules"), live, wanted).await
}

/// [`converge_rules`] for the list at `rules`, the path its positions hang off (`{rules}/{pos}`): a
/// security group's is `/cluster/firewall/groups/{group}`.
pub async fn converge_rule_list(
    client: &Client,
    rules: &str,
    live: &[Value],
    wanted: &[Value],
) -> Result<usize, PveError> {
    let rules = rules.to_owned();
    let mut writes = 0;
    // Keep each live rule that a wanted rule still claims; delete the rest, from the bottom up.
    let mut unclaimed: Vec<&Value> = wanted.iter().collect();
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for (position, rule) in live.iter().enumerate() {
        match unclaimed.iter().position(|candidate| *candidate == rule) {
            Some(index) => {
                unclaimed.remove(index);
                keep.push(rule.clone());
            }
            None => delete.push(position),
        }
    }
    let mut expected = live.to_vec();
    for position in delete.into_iter().rev() {
        let digest = digest_if_unchanged(client, &rules, &expected).await?;
        let query: Vec<(&str, &str)> = if digest.is_empty() {
            Vec::new()
        } else {
            vec![("digest", &digest)]
        };
        let _: Value = client.delete(&format!("{rules}/{position}"), &query).await?;
        expected.remove(position);
        writes += 1;
    }
    // Each kept rule knows its wanted position; a missing one is inserted (Proxmox inserts at the top).
    let mut current: Vec<(usize, Value)> = Vec::new();
    let mut claimed = vec![false; wanted.len()];
    for rule in keep {
        let index = (0..wanted.len())
            .find(|&index| !claimed[index] && wanted[index] == rule)
            .expect("every kept rule is claimed by a wanted one");
        claimed[index] = true;
        current.push((index, rule));
    }
    for (index, rule) in wanted.iter().enumerate().rev() {
        if claimed[index] {
            continue;
        }
        let mut form = Form::new();
        for (key, value) in rule.as_object().into_iter().flatten() {
            form = form.text(
                key,
                value.as_str().map_or_else(|| value.to_string(), str::to_owned),
            );
        }
        let before: Vec<Value> = current.iter().map(|(_, rule)| rule.clone()).collect();
        insert(client, &rules, &form, rule, &before).await?;
        current.insert(0, (index, rule.clone()));
        writes += 1;
    }
    // The longest run of rules already in wanted order stays where it is; every other rule is moved once,
    // next to the rules already in place, so a rule put in the middle by hand is one move, not a shuffle
    // of everything below it.
    let positions: Vec<usize> = current.iter().map(|(index, _)| *index).collect();
    let mut placed = longest_increasing(&positions);
    let mut movers: Vec<usize> = (0..current.len()).filter(|at| !placed[*at]).collect();
    movers.sort_by_key(|at| current[*at].0);
    // Wanted positions of the rules to move, the first to move last in the list.
    let mut pending: Vec<usize> = movers.iter().rev().map(|at| current[*at].0).collect();
    while let Some(index) = pending.pop() {
        let from = current
            .iter()
            .position(|(wanted_at, _)| *wanted_at == index)
            .expect("the rule is in the list");
        // In front of the first rule in place that comes after it, or at the end.
        let to = (0..current.len())
            .find(|&at| at != from && placed[at] && current[at].0 > index)
            .unwrap_or(current.len());
        let in_place = (0..from).all(|at| !placed[at] || current[at].0 < index)
            && (from + 1..current.len()).all(|at| !placed[at] || current[at].0 > index);
        if !in_place {
            let expected: Vec<Value> = current.iter().map(|(_, rule)| rule.clone()).collect();
            let digest = digest_if_unchanged(client, &rules, &expected).await?;
            // "moveto" places the rule in front of the one at that position before the move.
            let form = with_digest(Form::new().number("moveto", to as i64), &digest);
            let _: Value = client.put(&format!("{rules}/{from}"), &form).await?;
            writes += 1;
            let moved = current.remove(from);
            let flag = placed.remove(from);
            let at = if to > from { to - 1 } else { to };
            current.insert(at, moved);
            placed.insert(at, flag);
        }
        let at = current
            .iter()
            .position(|(wanted_at, _)| *wanted_at == index)
            .expect("the rule is in the list");
        placed[at] = true;
    }
    debug_assert!(current.iter().map(|(_, rule)| rule).eq(wanted.iter()));
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::longest_increasing;

    #[test]
    fn the_rules_in_order_are_the_longest_increasing_run() {
        // A rule put in the middle (the foreign one wants the last place): only it is out of order.
        assert_eq!(
            longest_increasing(&[0, 1, 6, 2, 3, 4, 5]),
            [true, true, false, true, true, true, true]
        );
        // An appended rule, inserted at the top.
        assert_eq!(longest_increasing(&[3, 0, 1, 2]), [false, true, true, true]);
        assert_eq!(longest_increasing(&[]), Vec::<bool>::new());
    }
}
