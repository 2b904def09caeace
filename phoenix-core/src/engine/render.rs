//! Renderings of plans, reports and the resource graph: for people (text, optionally coloured), for
//! machines (versioned JSON), and as picture sources (Graphviz DOT, Mermaid). Pure functions over data;
//! the caller decides about terminals and colour.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::engine::address::{Address, ResourceKind};
use crate::engine::change::{Action, Change, Consequence, FieldChange};
use crate::engine::executor::{Outcome, Report};
use crate::engine::journal::{Step, StepState};
use crate::engine::plan::{PLAN_FORMAT_VERSION, Plan, PlanEntry, PlanSummary};
use crate::engine::resource::{Desired, Resource};

/// Whether to colour text with ANSI escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// Plain text.
    Never,
    /// ANSI colours.
    Always,
}

impl Colour {
    fn paint(self, code: &str, text: &str) -> String {
        match self {
            Colour::Never => text.to_owned(),
            Colour::Always => format!("\x1b[{code}m{text}\x1b[0m"),
        }
    }
}

const GREEN: &str = "32";
const YELLOW: &str = "33";
const RED: &str = "31";
const BOLD_RED: &str = "1;31";
const MAGENTA: &str = "35";
const DIM: &str = "2";

/// The widest column that names are padded to. Names come from the configuration (a DNS record's field is a
/// guest's name), so a width taken from them is bounded: `format!` panics on a width above `u16::MAX`, and a
/// long name is better printed whole than everything else pushed out to its length.
const MAX_COLUMN: usize = 40;

/// The width of a column of `names`: the longest in characters, at least `minimum`, at most [`MAX_COLUMN`].
pub fn column_width<'a>(names: impl Iterator<Item = &'a str>, minimum: usize) -> usize {
    names
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(minimum, MAX_COLUMN)
}

/// The plan as people read it, in the spirit of `terraform plan`.
pub fn plan_text(plan: &Plan, colour: Colour) -> String {
    let mut out = String::new();
    if let Some(reason) = plan.offline() {
        let _ = writeln!(
            out,
            "Offline plan: {reason}; planned against an empty estate, nothing was read from Proxmox.\n"
        );
    }
    if !plan.targets().is_empty() {
        let targets: Vec<String> = plan.targets().iter().map(Address::to_string).collect();
        let _ = writeln!(out, "Targets: {} and what they depend on.\n", targets.join(", "));
    }
    for entry in plan.entries().iter().filter(|entry| !entry.is_unchanged()) {
        for change in entry.shown_changes().iter() {
            write_change(&mut out, entry, change, colour);
        }
    }
    let mut unreachable: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (address, reason) in plan.unreachable() {
        unreachable.entry(reason).or_default().push(address.to_string());
    }
    for (reason, addresses) in unreachable {
        let _ = writeln!(
            out,
            "  {} {}: {reason}; not read or planned, and a run skips them and what depends on them.",
            colour.paint(YELLOW, "?"),
            addresses.join(", ")
        );
    }
    if !plan.unmanaged().is_empty() {
        let parts: Vec<String> = plan
            .unmanaged()
            .iter()
            .map(|(kind, count)| describe_count(*kind, *count))
            .collect();
        let _ = writeln!(
            out,
            "Not planned: {} (no manager for these kinds yet).",
            parts.join(", ")
        );
    }
    out.push_str(&summary_line(&plan.summary(), colour));
    out.push('\n');
    out
}

fn describe_count(kind: ResourceKind, count: usize) -> String {
    let noun = match kind {
        ResourceKind::Host => "host step",
        ResourceKind::Lxc => "container",
        ResourceKind::Vm => "VM",
        ResourceKind::Stack => "stack or Portainer step",
        ResourceKind::Sync => "sync step",
    };
    format!("{count} {noun}{}", if count == 1 { "" } else { "s" })
}

fn write_change(out: &mut String, entry: &PlanEntry, change: &Change, colour: Colour) {
    let (symbol, code, verb) = match change.action {
        Action::Create => ("+", GREEN, "create"),
        Action::Update => ("~", YELLOW, "update in place"),
        Action::Replace => ("-/+", MAGENTA, "replace"),
        Action::Delete => ("-", RED, "delete"),
    };
    let name = entry.name().map(|name| format!(" ({name})")).unwrap_or_default();
    let mark = match change.consequence() {
        Consequence::Live => String::new(),
        Consequence::Restart => format!("  {}", colour.paint(YELLOW, "[needs restart]")),
        Consequence::Downtime => format!("  {}", colour.paint(YELLOW, "[downtime]")),
        Consequence::Risky => format!("  {}", colour.paint(BOLD_RED, "[RISKY]")),
        Consequence::Destructive => format!("  {}", colour.paint(BOLD_RED, "[DESTRUCTIVE]")),
    };
    let _ = writeln!(
        out,
        "  {} {}{name}: {verb}{mark}",
        colour.paint(code, symbol),
        change.address
    );
    let width = column_width(change.fields.iter().map(|field| field.field.as_str()), 0);
    for field in &change.fields {
        let _ = writeln!(out, "      {}", field_line(field, width, change.action, colour));
    }
}

fn field_line(field: &FieldChange, width: usize, action: Action, colour: Colour) -> String {
    let name = format!("{:width$}", field.field);
    let value = |value: &Option<Value>| value.as_ref().map_or_else(|| "(none)".to_owned(), compact);
    let body = match action {
        Action::Create => format!("{name} = {}", value(&field.new)),
        _ => format!("{name}   {} -> {}", value(&field.old), value(&field.new)),
    };
    let mark = match (action, field.consequence) {
        (_, Consequence::Risky) => format!("  {}", colour.paint(BOLD_RED, "(risky)")),
        (Action::Create, _) | (_, Consequence::Live) => String::new(),
        (_, Consequence::Restart) => format!("  {}", colour.paint(YELLOW, "(restart)")),
        (_, Consequence::Downtime) => format!("  {}", colour.paint(YELLOW, "(guest down meanwhile)")),
        (_, Consequence::Destructive) => format!("  {}", colour.paint(BOLD_RED, "(destroys data)")),
    };
    format!("{body}{mark}")
}

fn compact(value: &Value) -> String {
    const LIMIT: usize = 100;
    let text = value.to_string();
    if text.chars().count() > LIMIT {
        let cut: String = text.chars().take(LIMIT - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// `Plan: 3 to create, 1 to update, ...` with the destructive part loud.
pub fn summary_line(summary: &PlanSummary, colour: Colour) -> String {
    let mut parts = vec![
        format!("{} to create", summary.create),
        format!("{} to update", summary.update),
        format!("{} to replace", summary.replace),
        format!("{} to delete", summary.delete),
    ];
    if summary.restart > 0 {
        parts.push(colour.paint(YELLOW, &format!("{} need a restart", summary.restart)));
    }
    if summary.destructive > 0 {
        parts.push(colour.paint(BOLD_RED, &format!("{} destructive", summary.destructive)));
    }
    if summary.downtime > 0 {
        parts.push(colour.paint(YELLOW, &format!("{} with downtime", summary.downtime)));
    }
    if summary.risky > 0 {
        parts.push(colour.paint(BOLD_RED, &format!("{} risky", summary.risky)));
    }
    parts.push(format!("{} unchanged", summary.unchanged));
    let changes = summary.create + summary.update + summary.replace + summary.delete;
    if summary.unreachable > 0 {
        let unreachable = colour.paint(
            YELLOW,
            &format!(
                "{} unreachable (not read): this plan is incomplete",
                summary.unreachable
            ),
        );
        if changes == 0 && summary.not_planned == 0 {
            return format!(
                "No changes in what was read ({} resources up to date), but {unreachable}.",
                summary.unchanged
            );
        }
        parts.push(unreachable);
    }
    if summary.not_planned > 0 {
        // A plan that did not look at everything must not read as "no changes".
        let incomplete = colour.paint(
            YELLOW,
            &format!(
                "{} not planned (no manager yet): this plan is incomplete",
                summary.not_planned
            ),
        );
        if changes == 0 {
            return format!(
                "No changes in what was read ({} resources up to date), but {incomplete}.",
                summary.unchanged
            );
        }
        parts.push(incomplete);
    }
    if changes == 0 {
        return format!("No changes: {} resources are up to date.", summary.unchanged);
    }
    format!("Plan: {}.", parts.join(", "))
}

/// The JSON plan document (`phoenix plan --output json`), format version [`PLAN_FORMAT_VERSION`].
#[derive(Debug, Serialize)]
pub struct PlanDocument<'a> {
    /// Version of this format; incremented on incompatible changes.
    pub format_version: u32,
    /// Why the plan is offline, or null when it was made against the live estate.
    pub offline: Option<&'a str>,
    /// Targets the plan is limited to (empty: everything).
    pub targets: &'a [Address],
    /// Counts.
    pub summary: PlanSummary,
    /// Every resource in scope, in apply order.
    pub resources: Vec<PlanResource<'a>>,
    /// Declared resources not planned, by kind, because no manager exists for the kind.
    pub unmanaged: &'a BTreeMap<ResourceKind, usize>,
}

/// One resource of the JSON plan.
#[derive(Debug, Serialize)]
pub struct PlanResource<'a> {
    /// Its address.
    pub address: &'a Address,
    /// Its short name.
    pub name: Option<&'a str>,
    /// `create`, `update`, `replace`, `delete`, `none` when up to date, or `unreachable` when it could
    /// not be read.
    pub action: &'static str,
    /// Why it could not be read (its node is offline); left out when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<&'a str>,
    /// The worst consequence: `live`, `restart`, `downtime`, `risky`, `destructive`; null when up to date.
    pub consequence: Option<Consequence>,
    /// Resources it waits for.
    pub depends_on: &'a [Address],
    /// The changes, each with its fields and their old and new values.
    pub changes: ShownChanges<'a>,
}

/// The changes of one entry as [`PlanEntry::shown_changes`] has them, made as they are written: a lean
/// creation's fields are held only while its resource is serialised.
#[derive(Debug)]
pub struct ShownChanges<'a>(&'a PlanEntry);

impl Serialize for ShownChanges<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.shown_changes().serialize(serializer)
    }
}

/// Builds the JSON document of a plan.
pub fn plan_document(plan: &Plan) -> PlanDocument<'_> {
    let resources = plan
        .entries()
        .iter()
        .map(|entry| PlanResource {
            address: &entry.address,
            name: entry.name(),
            action: match entry.changes.iter().map(|change| change.action).max() {
                None if entry.unreachable().is_some() => "unreachable",
                None => "none",
                Some(Action::Create) => "create",
                Some(Action::Update) => "update",
                Some(Action::Replace) => "replace",
                Some(Action::Delete) => "delete",
            },
            unreachable: entry.unreachable(),
            consequence: entry.consequence(),
            depends_on: &entry.depends_on,
            changes: ShownChanges(entry),
        })
        .collect();
    PlanDocument {
        format_version: PLAN_FORMAT_VERSION,
        offline: plan.offline(),
        targets: plan.targets(),
        summary: plan.summary(),
        resources,
        unmanaged: plan.unmanaged(),
    }
}

/// The summary table at the end of a run.
pub fn report_text(report: &Report, colour: Colour) -> String {
    let addresses: Vec<String> = report
        .resources
        .iter()
        .map(|line| line.address.to_string())
        .collect();
    let width = column_width(addresses.iter().map(String::as_str), 8);
    let mut out = format!("{:width$}  {:11}  {:>8}  DETAIL\n", "RESOURCE", "RESULT", "TIME");
    // Converged resources are only counted: the table is about what happened.
    for line in report
        .resources
        .iter()
        .filter(|line| line.outcome != Outcome::Unchanged)
    {
        let (result, code, detail) = match &line.outcome {
            Outcome::Changed { changes } => {
                ("changed", GREEN, format!("{changes} change{}", plural(*changes)))
            }
            Outcome::Unchanged => ("unchanged", DIM, String::new()),
            Outcome::Failed { error, .. } => {
                let first_line = error.lines().next().unwrap_or_default();
                ("failed", BOLD_RED, first_line.to_owned())
            }
            Outcome::Skipped { reason } => ("skipped", YELLOW, reason.clone()),
            Outcome::NotStarted => ("not started", YELLOW, "the run was stopped".to_owned()),
        };
        let time = if line.duration.is_zero() {
            "-".to_owned()
        } else {
            seconds(line.duration)
        };
        let _ = writeln!(
            out,
            "{:width$}  {}  {time:>8}  {detail}",
            line.address.to_string(),
            colour.paint(code, &format!("{result:11}"))
        );
        if matches!(line.outcome, Outcome::Failed { .. }) {
            steps_text(&mut out, &line.steps, width + 25);
        }
    }
    let (changed, unchanged, failed, skipped, not_started) = report.counts();
    let _ = write!(
        out,
        "\nApply {}: {changed} changed, {unchanged} unchanged, {failed} failed, {skipped} skipped, {not_started} not started in {}.",
        if report.succeeded() {
            "complete"
        } else if report.stopped {
            "stopped"
        } else {
            "failed"
        },
        seconds(report.elapsed)
    );
    out.push('\n');
    out
}

/// What a failed resource's work did, one step a line under its row: the operator's account of where it stands.
fn steps_text(out: &mut String, steps: &[Step], indent: usize) {
    if steps.is_empty() {
        let _ = writeln!(out, "{:indent$}nothing was written", "");
        return;
    }
    for step in steps {
        let state = match step.state {
            StepState::Done => "done:",
            StepState::Failed => "failed:",
            StepState::Running => "still running on Proxmox:",
        };
        let task = step
            .task
            .as_deref()
            .map(|upid| format!(" (task {upid})"))
            .unwrap_or_default();
        let _ = writeln!(out, "{:indent$}{state} {}{task}", "", step.what);
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Picture source formats for `phoenix graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// The resource graph as a picture source. Arrows go from what must exist first to what needs it; host
/// steps sit in their own group, which comes before every guest.
pub fn graph_source(resources: &[Resource], format: GraphFormat) -> String {
    let edges = picture_edges(resources);
    match format {
        GraphFormat::Dot => dot(resources, &edges),
        GraphFormat::Mermaid => mermaid(resources, &edges),
    }
}

/// The label of an order that is not a prerequisite ([`Resource::after`]), drawn dashed.
const AFTER: &str = "after";

/// (from, to, label) with host edges into guests left out: the host group stands for them.
fn picture_edges(resources: &[Resource]) -> Vec<(&Address, &Address, &'static str)> {
    let mut edges = Vec::new();
    for resource in resources {
        for prerequisite in &resource.depends_on {
            if prerequisite.kind() == ResourceKind::Host && resource.kind() != ResourceKind::Host {
                continue;
            }
            let label = if clone_source(resource) == Some(prerequisite) {
                "clone"
            } else {
                ""
            };
            edges.push((prerequisite, &resource.address, label));
        }
        for before in &resource.after {
            edges.push((before, &resource.address, AFTER));
        }
    }
    edges
}

fn clone_source(resource: &Resource) -> Option<&Address> {
    let source = match &resource.desired {
        Desired::Container(container) => container
            .clone_from_ctid
            .as_deref()?
            .parse()
            .ok()
            .map(Address::Lxc),
        Desired::Vm(vm) => vm.clone_from_vmid.map(Address::Vm),
        _ => None,
    }?;
    resource.depends_on.iter().find(|address| **address == source)
}

fn label(resource: &Resource) -> String {
    match &resource.name {
        Some(name) => format!("{}\\n{name}", resource.address),
        None => resource.address.to_string(),
    }
}

fn dot(resources: &[Resource], edges: &[(&Address, &Address, &str)]) -> String {
    let mut out =
        String::from("digraph phoenix {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=11];\n");
    let style = |kind: ResourceKind| match kind {
        ResourceKind::Host => "shape=folder, style=filled, fillcolor=\"#e5e7eb\"",
        ResourceKind::Lxc => "shape=box, style=\"rounded,filled\", fillcolor=\"#dbeafe\"",
        ResourceKind::Vm => "shape=box3d, style=filled, fillcolor=\"#dcfce7\"",
        ResourceKind::Stack => "shape=component, style=filled, fillcolor=\"#fef3c7\"",
        ResourceKind::Sync => "shape=note, style=filled, fillcolor=\"#fce7f3\"",
    };
    let host: Vec<&Resource> = resources
        .iter()
        .filter(|resource| resource.kind() == ResourceKind::Host)
        .collect();
    if !host.is_empty() {
        out.push_str(
            "  subgraph cluster_host {\n    label=\"host setup (before every guest)\";\n    style=dashed;\n",
        );
        for resource in host {
            let _ = writeln!(
                out,
                "    \"{}\" [label=\"{}\", {}];",
                resource.address,
                label(resource),
                style(ResourceKind::Host)
            );
        }
        out.push_str("  }\n");
    }
    for resource in resources
        .iter()
        .filter(|resource| resource.kind() != ResourceKind::Host)
    {
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\", {}];",
            resource.address,
            label(resource),
            style(resource.kind())
        );
    }
    for (from, to, edge_label) in edges {
        if edge_label.is_empty() {
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
        } else if *edge_label == AFTER {
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [style=dashed];");
        } else {
            let _ = writeln!(
                out,
                "  \"{from}\" -> \"{to}\" [label=\"{edge_label}\", style=bold];"
            );
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_id(address: &Address) -> String {
    address
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn mermaid(resources: &[Resource], edges: &[(&Address, &Address, &str)]) -> String {
    let mut out = String::from("flowchart LR\n");
    let node = |resource: &Resource| {
        let text = label(resource).replace("\\n", "<br/>");
        let id = mermaid_id(&resource.address);
        match resource.kind() {
            ResourceKind::Host => format!("{id}[/\"{text}\"/]:::host"),
            ResourceKind::Lxc => format!("{id}(\"{text}\"):::lxc"),
            ResourceKind::Vm => format!("{id}[[\"{text}\"]]:::vm"),
            ResourceKind::Stack => format!("{id}{{{{\"{text}\"}}}}:::stack"),
            ResourceKind::Sync => format!("{id}>\"{text}\"]:::sync"),
        }
    };
    let host: Vec<&Resource> = resources
        .iter()
        .filter(|resource| resource.kind() == ResourceKind::Host)
        .collect();
    if !host.is_empty() {
        out.push_str("  subgraph host[\"host setup (before every guest)\"]\n");
        for resource in host {
            let _ = writeln!(out, "    {}", node(resource));
        }
        out.push_str("  end\n");
    }
    for resource in resources
        .iter()
        .filter(|resource| resource.kind() != ResourceKind::Host)
    {
        let _ = writeln!(out, "  {}", node(resource));
    }
    for (from, to, edge_label) in edges {
        let arrow = if edge_label.is_empty() {
            "-->".to_owned()
        } else if *edge_label == AFTER {
            "-.->".to_owned()
        } else {
            format!("== {edge_label} ==>")
        };
        let _ = writeln!(out, "  {} {arrow} {}", mermaid_id(from), mermaid_id(to));
    }
    out.push_str(
        "  classDef host fill:#e5e7eb,stroke:#6b7280\n  classDef lxc fill:#dbeafe,stroke:#2563eb\n  classDef vm fill:#dcfce7,stroke:#16a34a\n  classDef stack fill:#fef3c7,stroke:#d97706\n  classDef sync fill:#fce7f3,stroke:#db2777\n",
    );
    out
}
