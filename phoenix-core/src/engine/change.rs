//! Changes as data: what a diff finds and an apply carries out, with the consequence of each.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::address::Address;
use crate::engine::manager::Differ;
use crate::engine::resource::Resource;

/// What applying a change does to a running guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consequence {
    /// Applied live, without interruption.
    #[default]
    Live,
    /// Takes effect when the guest restarts; Phoenix never restarts a guest just for this.
    Restart,
    /// Applied now, and the guest is down while it is done: a running container migrated to another
    /// node is shut down there and started here (Proxmox's restart mode).
    Downtime,
    /// Applied live, but may cut Phoenix (and everyone else) off the node: a change to the network
    /// interface the API is reached through, or network changes pending on the node that Phoenix did not
    /// make; needs `--allow-risky`.
    Risky,
    /// Destroys data or the resource itself (replace, delete, disk shrink); needs `--allow-destroy`.
    Destructive,
}

/// The kind of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The resource does not exist and is created.
    Create,
    /// The resource exists and some fields change in place.
    Update,
    /// The resource is destroyed and created again (a field cannot change in place).
    Replace,
    /// The resource exists, is owned by Phoenix, and is no longer declared.
    Delete,
}

/// One field whose value changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Field name, as the manager knows it (`memory_mb`, `net0`).
    pub field: String,
    /// Live value; `None` when absent.
    pub old: Option<Value>,
    /// Desired value; `None` when the field goes away.
    pub new: Option<Value>,
    /// What changing this field does.
    pub consequence: Consequence,
}

/// One change to one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The resource changed.
    pub address: Address,
    /// Create, update, replace or delete.
    pub action: Action,
    /// The fields involved, sorted by name.
    pub fields: Vec<FieldChange>,
}

impl Change {
    /// The worst consequence of the change.
    pub fn consequence(&self) -> Consequence {
        let fields = self
            .fields
            .iter()
            .map(|field| field.consequence)
            .max()
            .unwrap_or_default();
        match self.action {
            Action::Delete | Action::Replace => Consequence::Destructive,
            Action::Create | Action::Update => fields,
        }
    }

    /// A creation with every desired field, taking them: a plan of thousands of creations copies none.
    pub fn create(address: Address, desired: BTreeMap<String, Value>) -> Change {
        let fields = desired
            .into_iter()
            .map(|(field, value)| FieldChange {
                field,
                old: None,
                new: Some(value),
                consequence: Consequence::Live,
            })
            .collect();
        Change {
            address,
            action: Action::Create,
            fields,
        }
    }

    /// An update of these fields, or nothing when there are none.
    pub fn updates(address: &Address, fields: Vec<FieldChange>) -> Vec<Change> {
        if fields.is_empty() {
            return Vec::new();
        }
        vec![Change {
            address: address.clone(),
            action: Action::Update,
            fields,
        }]
    }

    /// A deletion of a resource Phoenix owns but the configuration no longer declares.
    pub fn delete(address: Address) -> Change {
        Change {
            address,
            action: Action::Delete,
            fields: Vec::new(),
        }
    }
}

/// A manager's field vocabulary: a closed enum, so that an apply that matches on it exhaustively has a path
/// for every field the diff can produce, or does not compile.
///
/// Plans, reports and the demo state name fields by [`FieldKey::name`]; [`FieldKey::parse`] reads a name
/// back, and is derived from `name` over [`FieldKey::all`] unless the vocabulary has fields with data.
pub trait FieldKey: Clone + Ord + fmt::Debug + Send + Sync + 'static {
    /// Every field without data, for [`FieldKey::parse`].
    fn all() -> &'static [Self];

    /// The name in plans and reports (`memory`, `net0`).
    fn name(&self) -> String;

    /// The field of a name, when the vocabulary has one.
    fn parse(name: &str) -> Option<Self> {
        Self::all().iter().find(|field| field.name() == name).cloned()
    }
}

/// Field values keyed by a manager's vocabulary: a resource's desired or live state.
pub type Fields<F> = BTreeMap<F, Value>;

/// One field change in a manager's own vocabulary: what its diff produces and its apply matches on.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedChange<F> {
    /// The field.
    pub field: F,
    /// Live value; `None` when absent.
    pub old: Option<Value>,
    /// The complete value to write.
    pub new: Value,
    /// What changing this field does.
    pub consequence: Consequence,
}

impl<F: FieldKey> TypedChange<F> {
    /// The change as plans show it.
    pub fn untyped(&self) -> FieldChange {
        FieldChange {
            field: self.field.name(),
            old: self.old.clone(),
            new: Some(self.new.clone()),
            consequence: self.consequence,
        }
    }
}

impl FieldChange {
    /// The change in a manager's vocabulary, or why it has none: a field the vocabulary does not know (a
    /// plan from another version, say), or a removal, which no vocabulary applies. Apply fails on these
    /// rather than skip them, so nothing is reported as applied that was not.
    pub fn typed<F: FieldKey>(&self) -> Result<TypedChange<F>, UnknownField> {
        let unknown = || UnknownField {
            field: self.field.clone(),
        };
        let field = F::parse(&self.field).ok_or_else(unknown)?;
        let new = self.new.clone().ok_or_else(unknown)?;
        Ok(TypedChange {
            field,
            old: self.old.clone(),
            new,
            consequence: self.consequence,
        })
    }
}

/// A field change that a manager has no way to apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("`{field}` is not a change this manager can apply")]
#[diagnostic(
    code(phoenix::change::unknown_field),
    help("plan again with this version of Phoenix and apply that plan")
)]
pub struct UnknownField {
    /// The field as the change names it.
    pub field: String,
}

/// The live state of one resource as a manager reads it: normalised fields, comparable with desired ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Field values, normalised by the manager.
    pub fields: BTreeMap<String, Value>,
    /// Why the resource could not be read, when it could not (its node is offline): the plan then
    /// changes nothing of it, and a run skips it and what depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

impl Observed {
    /// Live state with these fields.
    pub fn new(fields: BTreeMap<String, Value>) -> Observed {
        Observed {
            fields,
            unreachable: None,
        }
    }

    /// A resource that exists, or may, where nothing can be read now: `reason` says why
    /// (`node pve3 is offline`).
    pub fn unreachable(reason: impl Into<String>) -> Observed {
        Observed {
            fields: BTreeMap::new(),
            unreachable: Some(reason.into()),
        }
    }

    /// Typed fields as plans and the demo state keep them, by name.
    pub fn from_fields<F: FieldKey>(fields: &Fields<F>) -> Observed {
        Observed::new(
            fields
                .iter()
                .map(|(field, value)| (field.name(), value.clone()))
                .collect(),
        )
    }

    /// The fields in a manager's vocabulary; names it does not know (from an older demo state file, say)
    /// are left out.
    pub fn to_fields<F: FieldKey>(&self) -> Fields<F> {
        self.fields
            .iter()
            .filter_map(|(name, value)| Some((F::parse(name)?, value.clone())))
            .collect()
    }
}

/// Compares declared fields with live ones and returns the fields that differ, sorted by name.
///
/// Only declared fields count: a field the configuration leaves unset is not drift, whatever Proxmox holds.
/// `consequence` says what changing a field does, given its old and new values.
pub fn diff_fields(
    desired: &BTreeMap<String, Value>,
    observed: &BTreeMap<String, Value>,
    consequence: impl Fn(&str, Option<&Value>, &Value) -> Consequence,
) -> Vec<FieldChange> {
    desired
        .iter()
        .filter(|(field, value)| observed.get(*field) != Some(*value))
        .map(|(field, value)| {
            let old = observed.get(field);
            FieldChange {
                field: field.clone(),
                old: old.cloned(),
                new: Some(value.clone()),
                consequence: consequence(field, old, value),
            }
        })
        .collect()
}

/// The changes that take a resource Phoenix owns whole (a file it writes, say) from `observed` (`None`:
/// absent) to `desired`. Unlike [`diff_fields`], a live field the configuration does not declare is a
/// change too, a removal (`new` is `None`).
pub fn diff_owned(
    address: &Address,
    desired: BTreeMap<String, Value>,
    observed: Option<&Observed>,
) -> Vec<Change> {
    let Some(observed) = observed else {
        return vec![Change::create(address.clone(), desired)];
    };
    let mut fields = diff_fields(&desired, &observed.fields, |_, _, _| Consequence::Live);
    fields.extend(
        observed
            .fields
            .iter()
            .filter(|(field, _)| !desired.contains_key(*field))
            .map(|(field, value)| FieldChange {
                field: field.clone(),
                old: Some(value.clone()),
                new: None,
                consequence: Consequence::Live,
            }),
    );
    fields.sort_by(|left, right| left.field.cmp(&right.field));
    Change::updates(address, fields)
}

/// The changes that take `observed` (`None`: absent) to `desired`, comparing declared fields only
/// ([`diff_fields`]), each applied live.
pub fn diff_declared(
    address: &Address,
    desired: BTreeMap<String, Value>,
    observed: Option<&Observed>,
) -> Vec<Change> {
    let Some(observed) = observed else {
        return vec![Change::create(address.clone(), desired)];
    };
    Change::updates(
        address,
        diff_fields(&desired, &observed.fields, |_, _, _| Consequence::Live),
    )
}

/// The [`Differ`] of resources Phoenix owns whole ([`diff_owned`]): the sync steps, for plans that have no
/// live target (offline, demo). What it creates reads back as declared.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnedDiffer;

impl Differ for OwnedDiffer {
    fn diff(&self, desired: &Resource, observed: Option<&Observed>) -> Vec<Change> {
        diff_owned(&desired.address, desired.declared_fields(), observed)
    }

    fn created(&self, desired: &Resource) -> Observed {
        Observed::new(desired.declared_fields())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_declared_fields_that_differ_are_changes() {
        let desired = BTreeMap::from([
            ("cores".to_owned(), json!(4)),
            ("memory_mb".to_owned(), json!(2048)),
        ]);
        let observed = BTreeMap::from([
            ("cores".to_owned(), json!(2)),
            ("memory_mb".to_owned(), json!(2048)),
            ("mac_address".to_owned(), json!("BC:24:11:00:00:01")),
        ]);
        let changes = diff_fields(&desired, &observed, |_, _, _| Consequence::Restart);
        assert_eq!(
            changes,
            [FieldChange {
                field: "cores".into(),
                old: Some(json!(2)),
                new: Some(json!(4)),
                consequence: Consequence::Restart
            }]
        );
    }

    /// A two-field vocabulary, as a manager has one.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Field {
        Cores,
        Memory,
    }

    impl FieldKey for Field {
        fn all() -> &'static [Field] {
            &[Field::Cores, Field::Memory]
        }

        fn name(&self) -> String {
            match self {
                Field::Cores => "cores",
                Field::Memory => "memory",
            }
            .to_owned()
        }
    }

    #[test]
    fn a_change_reads_back_in_its_vocabulary_or_says_it_cannot_be_applied() {
        let change = |field: &str, new: Option<Value>| FieldChange {
            field: field.to_owned(),
            old: Some(json!(1)),
            new,
            consequence: Consequence::Restart,
        };
        let typed = change("cores", Some(json!(2))).typed::<Field>().expect("known");
        assert_eq!((typed.field, typed.new.clone()), (Field::Cores, json!(2)));
        assert_eq!(typed.untyped(), change("cores", Some(json!(2))));
        let unknown = change("memory_mb", Some(json!(2)))
            .typed::<Field>()
            .expect_err("unknown");
        assert_eq!(unknown.field, "memory_mb");
        change("memory", None)
            .typed::<Field>()
            .expect_err("a removal has no apply path");
    }

    #[test]
    fn observed_fields_round_trip_and_drop_unknown_names() {
        let fields = BTreeMap::from([(Field::Cores, json!(2)), (Field::Memory, json!(512))]);
        let mut observed = Observed::from_fields(&fields);
        assert_eq!(observed.fields["memory"], json!(512));
        observed.fields.insert("memory_mb".into(), json!(1));
        assert_eq!(observed.to_fields::<Field>(), fields);
    }

    #[test]
    fn consequence_of_a_change_is_its_worst() {
        let address = Address::Lxc(101);
        let mut change = Change::create(address.clone(), BTreeMap::from([("cores".to_owned(), json!(1))]));
        assert_eq!(change.consequence(), Consequence::Live);
        change.action = Action::Update;
        change.fields[0].consequence = Consequence::Restart;
        assert_eq!(change.consequence(), Consequence::Restart);
        assert_eq!(Change::delete(address).consequence(), Consequence::Destructive);
    }
}
