//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// Declarative, convergent orchestration of a Proxmox VE estate.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, about, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration directory holding the four phoenix_*.json files.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "PHOENIX_CONFIG_DIR",
        default_value = "./etc",
        value_name = "DIR"
    )]
    pub config: PathBuf,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration directory: JSON syntax, schemas and semantic rules.
    Validate(ValidateArgs),
    /// Show what apply would change, resource by resource.
    Plan(PlanArgs),
    /// Converge the estate: plan, confirm, then apply in dependency order.
    Apply(ApplyArgs),
    /// Set up the Proxmox node: converge every host step (apply limited to `host/*`).
    Setup(SetupArgs),
    /// Create the given guests and everything they depend on (apply limited to targets).
    Create(CreateArgs),
    /// Converge the given guests and everything they depend on: create, correct drift, rerun changed
    /// features (the same run as `create`, named for guests that already exist).
    Converge(CreateArgs),
    /// Publish the estate: Portainer and its stacks, then Traefik's dynamic configuration and DNS
    /// (apply limited to `stack/*` and `sync/*`, with what they need).
    #[command(subcommand)]
    Sync(SyncScope),
    /// Show each resource's live state and drift.
    Status(StatusArgs),
    /// Start guests, in dependency order.
    Start(GuestsArgs),
    /// Shut guests down, dependents first.
    Stop(GuestsArgs),
    /// Restart guests, in dependency order.
    Restart(GuestsArgs),
    /// Run guests' health checks.
    HealthCheck(GuestsArgs),
    /// Take a snapshot of a guest.
    Snapshot(SnapshotArgs),
    /// Roll a guest back to a snapshot.
    Rollback(SnapshotArgs),
    /// Delete guests Phoenix owns (tagged `phoenix`); refuses while other guests depend on them.
    Delete(DeleteArgs),
    /// Write guests that exist on the cluster but in no configuration file into the configuration
    /// directory, as entries that declare them as they are; --adopt then tags them as owned.
    Import(ImportArgs),
    /// Print the resource graph as Graphviz DOT or Mermaid.
    Graph(GraphArgs),
    /// Print the JSON Schema of a configuration file (all four names when none is given).
    Schema(SchemaArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

impl Command {
    /// The output format the command was asked for; human for commands without `--output`.
    pub(crate) fn output(&self) -> OutputFormat {
        match self {
            Command::Validate(args) => args.output,
            Command::Plan(args) => args.output,
            Command::Apply(args) => args.run.output,
            Command::Create(args) | Command::Converge(args) => args.run.output,
            Command::Setup(args) => args.run.output,
            Command::Sync(scope) => scope.options().run.output,
            Command::Status(args) => args.output,
            Command::Start(_)
            | Command::Stop(_)
            | Command::Restart(_)
            | Command::HealthCheck(_)
            | Command::Snapshot(_)
            | Command::Rollback(_)
            | Command::Delete(_)
            | Command::Import(_)
            | Command::Graph(_)
            | Command::Schema(_)
            | Command::Completions(_) => OutputFormat::Human,
        }
    }
}

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// How to print problems.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// Where plans and applies read and write the estate.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Plan against an empty estate without contacting Proxmox.
    #[arg(long, conflicts_with = "demo")]
    pub offline: bool,
    /// Use the built-in demo target: a simulated Proxmox whose state is kept in a local file.
    #[arg(long)]
    pub demo: bool,
    /// The demo target's state file (default: a file per config directory in $XDG_STATE_HOME/phoenix/demo).
    /// Ignored without --demo, so that an exported PHOENIX_DEMO_STATE does not get in the way.
    #[arg(long, value_name = "FILE", env = "PHOENIX_DEMO_STATE")]
    pub demo_state: Option<PathBuf>,
    /// Also upgrade the node's packages (`apt-get dist-upgrade` in `host/apt/packages`); plans show how many
    /// packages would be upgraded.
    #[arg(long)]
    pub upgrade: bool,
    /// The node whose host steps (`host/*`) are planned and applied (default: the first of `proxmox.nodes`).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// How a writing command waits for the run lock another run on the same target holds.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// How long to wait for another run's lock on this target (`0`: fail at once); such as 30s, 5m, 1h.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub lock_timeout: Duration,
    /// Take over the cluster-wide run lock even before its lease expires (for a run known to be dead).
    #[arg(long)]
    pub force_unlock: bool,
}

/// Parses `90`, `90s`, `5m` or `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        _ => return Err(format!("`{text}` has unit `{unit}`; use s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Limit the plan to these resources (IDs such as 101, or addresses such as lxc/101) and their prerequisites.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// How apply runs.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Apply without asking (required when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow destructive changes: replacements, deletions, disk shrinks, a change to more than a third of
    /// a public DNS zone.
    #[arg(long, visible_alias = "force")]
    pub allow_destroy: bool,
    /// Allow risky changes: the node's network interface Phoenix reaches it through, or network
    /// changes pending on the node that Phoenix did not make.
    #[arg(long)]
    pub allow_risky: bool,
    /// Resources worked on at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallelism: u16,
    /// Resources worked on at once on one Proxmox node.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub per_node: u16,
    /// Creations and clones at once on one storage of a node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub per_storage: u16,
    /// How to print the plan and the final report.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Arguments of `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Limit the run to these resources and their prerequisites.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Guests (IDs or addresses) to converge, with everything they depend on.
    #[arg(value_name = "ID", required = true)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What `sync` publishes.
#[derive(Debug, Subcommand)]
pub enum SyncScope {
    /// Every stack, the Portainer server and environments, Traefik and DNS.
    All(SyncArgs),
    /// One stack on one VM, with what it needs: `phoenix sync stack qdrant to 1002`.
    Stack(SyncStackArgs),
}

impl SyncScope {
    /// How the sync runs.
    pub fn options(&self) -> &SyncArgs {
        match self {
            SyncScope::All(options) => options,
            SyncScope::Stack(stack) => &stack.options,
        }
    }
}

/// How a sync runs: `apply`'s options, or `--plan` with `plan`'s.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only show what the sync would change, as `phoenix plan` does; nothing is written.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
    #[arg(long, requires = "plan")]
    pub detailed_exitcode: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `sync stack`.
#[derive(Debug, Args)]
pub struct SyncStackArgs {
    /// The stack's name in `phoenix_stacks_config.json`.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The word `to`.
    #[arg(value_name = "to", value_parser = ["to"], hide_possible_values = true)]
    pub to: String,
    /// The VM that lists the stack in its `docker_stacks`.
    #[arg(value_name = "VMID")]
    pub vmid: u32,
    #[command(flatten)]
    pub options: SyncArgs,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these resources (and what they depend on); everything when none is given.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// How to print the table.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// Guests to operate on.
#[derive(Debug, Args)]
pub struct GuestsArgs {
    /// Guest IDs (101) or addresses (lxc/101).
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Arguments of `snapshot` and `rollback`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Guest ID or address.
    #[arg(value_name = "ID")]
    pub id: String,
    /// Snapshot name.
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Roll back without asking (required when not on a terminal); `snapshot` does not ask.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub guests: GuestsArgs,
    /// Delete even when other guests depend on these.
    #[arg(long)]
    pub force: bool,
    /// Delete without asking (required when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Arguments of `import`. Filters of one kind pass a guest that matches any of their values; `--id` and
/// `--range` together pass a guest either names.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Import this guest (repeatable).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<u32>,
    /// Import the guests with IDs in this range, both ends included (repeatable): `200-299`.
    #[arg(long = "range", value_name = "FIRST-LAST", value_parser = parse_range)]
    pub ranges: Vec<std::ops::RangeInclusive<u32>>,
    /// Import only guests on this node (repeatable).
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Import only guests carrying this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Show what would be written and planned; write nothing and tag nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// After writing the configuration, tag the imported guests as owned by Phoenix (`phoenix`), so that
    /// later runs may change, replace and delete them; nothing else on them is changed.
    #[arg(long, conflicts_with = "dry_run")]
    pub adopt: bool,
    /// Adopt without asking (required when not on a terminal).
    #[arg(long, short = 'y', requires = "adopt")]
    pub yes: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// Parses `200-299`.
fn parse_range(text: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let bad = || format!("`{text}` is not a range of IDs such as 200-299");
    let (first, last) = text.split_once('-').ok_or_else(bad)?;
    let first: u32 = first.trim().parse().map_err(|_| bad())?;
    let last: u32 = last.trim().parse().map_err(|_| bad())?;
    if first > last {
        return Err(format!(
            "`{text}` ends before it starts; write the lower ID first"
        ));
    }
    Ok(first..=last)
}

/// Arguments of `graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Picture source format.
    #[arg(long, value_enum, default_value_t = GraphFormatArg::Dot)]
    pub format: GraphFormatArg,
}

/// Picture formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormatArg {
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
    /// Mermaid flowchart (renders on GitHub).
    Mermaid,
}

/// Arguments of `schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// `hypervisor`, `lxc`, `vm` or `stacks` (or a file name such as `phoenix_lxc_configs.json`).
    pub name: Option<String>,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate for.
    pub shell: Shell,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Human,
    /// JSON, for machines.
    Json,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;

    use super::{Cli, parse_duration, parse_range};

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn lock_timeouts_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn ranges_are_two_ids_lowest_first() {
        assert_eq!(parse_range("200-299"), Ok(200..=299));
        assert_eq!(parse_range("7-7"), Ok(7..=7));
        assert!(parse_range("299-200").unwrap_err().contains("lower ID first"));
        assert!(parse_range("200").is_err());
        assert!(parse_range("a-b").is_err());
    }
}
