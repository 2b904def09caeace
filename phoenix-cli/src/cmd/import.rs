//! `phoenix import`: guests that are on the cluster but in no configuration file are read and written into
//! the configuration directory as the entries that declare them as they are; then the plan of those guests
//! is shown, and with `--adopt` they are tagged as owned. Without `--adopt` nothing on the cluster changes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use miette::IntoDiagnostic;
use phoenix_core::engine::render::{self, Colour};
use phoenix_core::import::{self, Imported};
use phoenix_core::{ExecuteOptions, FileKind, GuestKind, Operation, Outcome, SourceFile, StopHandle};
use phoenix_pve::Session;
use phoenix_pve::guests::GuestDriver;
use phoenix_pve::import::{Candidate, ImportFilter};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::args::{GlobalArgs, ImportArgs, TargetArgs};
use crate::exit::Exit;
use crate::load::{self, ConfigDir};
use crate::lock::RunLock;
use crate::target::{self, Target};
use crate::{files, render as output};

/// Guests read at once, as a plan reads them.
const READS_AT_ONCE: usize = 8;

pub(crate) async fn run(args: &ImportArgs, global: &GlobalArgs) -> miette::Result<Exit> {
    let dir = &global.config;
    let mut config = load::read(dir)?;
    // The guest files as they are on disk; a missing one is made, and meanwhile validates as empty.
    let on_disk: BTreeMap<FileKind, SourceFile> = config
        .sources
        .iter()
        .filter(|source| matches!(source.kind(), FileKind::Lxc | FileKind::Vm))
        .map(|source| (source.kind(), source.clone()))
        .collect();
    for (kind, empty) in [
        (FileKind::Lxc, r#"{"lxc_configs": {}}"#),
        (FileKind::Vm, r#"{"vms": []}"#),
    ] {
        if !on_disk.contains_key(&kind) {
            let path = dir.join(kind.file_name()).display().to_string();
            config.sources.push(SourceFile::new(kind, path, empty));
        }
    }
    let options = config.options.clone();
    let sources = config.sources.clone();
    let estate = load::validated(dir, config, "nothing was imported")?;

    let session = Session::open(&estate, dir, &|name| std::env::var(name).ok())
        .await
        .map_err(|error| {
            miette::Report::new(error).wrap_err("cannot connect to Proxmox to import from it")
        })?;
    let resources = session
        .client()
        .cluster_resources()
        .await
        .map_err(|error| miette::miette!("cannot list the cluster's guests: {error}"))?;
    let filter = ImportFilter {
        ids: args.ids.clone(),
        ranges: args.ranges.clone(),
        nodes: args.nodes.clone(),
        tags: args.tags.clone(),
    };
    let (found, passed_over) = phoenix_pve::import::candidates(&resources, &estate, &filter);
    println!("Proxmox at {}\n", session.endpoint());
    for (id, reason) in &passed_over {
        eprintln!("Not importing {id}: {reason}.");
    }
    if found.is_empty() {
        println!(
            "Nothing to import: the filters pass no guest that is neither declared already nor passed over above."
        );
        return Ok(Exit::Success);
    }

    let (imported, failures) = read_all(&session, &estate, dir, &found).await?;
    for (candidate, error) in &failures {
        eprintln!(
            "Cannot import {} {}: {error}",
            candidate.kind.noun(),
            candidate.id
        );
    }
    if imported.is_empty() {
        return Ok(Exit::Failure);
    }

    // The new text of each guest file; then the whole directory is validated as it would be written.
    let mut written: Vec<(FileKind, String, usize)> = Vec::new();
    let mut merged_sources = sources;
    for kind in [FileKind::Lxc, FileKind::Vm] {
        let guests: Vec<Imported> = imported
            .iter()
            .filter(|(candidate, _)| candidate.kind.file() == kind)
            .map(|(_, imported)| imported.clone())
            .collect();
        if guests.is_empty() {
            continue;
        }
        let text = import::merge(kind, on_disk.get(&kind), &guests).map_err(|error| {
            miette::miette!(
                code = "phoenix::import::unmergeable",
                help = "fix the file (`phoenix validate` says where), then import again; nothing was written",
                "{error}"
            )
        })?;
        let path = dir.join(kind.file_name()).display().to_string();
        merged_sources.retain(|source| source.kind() != kind);
        merged_sources.push(SourceFile::new(kind, path, text.clone()));
        written.push((kind, text, guests.len()));
    }
    let merged = ConfigDir {
        sources: merged_sources,
        options,
    };
    let new_estate = load::validated(
        dir,
        merged,
        "the imported configuration does not validate, so nothing was written",
    )?;

    print_imported(&imported);
    if args.dry_run {
        for (kind, text, _) in &written {
            println!("\n{} would be:\n{text}", kind.file_name());
        }
    } else {
        for (kind, text, _) in &written {
            write_config(&dir.join(kind.file_name()), text)?;
        }
    }
    let counts: Vec<String> = written
        .iter()
        .map(|(kind, _, count)| format!("{} ({})", kind.file_name(), guests_word(*kind, *count)))
        .collect();
    println!(
        "\n{} {}.",
        if args.dry_run { "Would write" } else { "Wrote" },
        counts.join(" and ")
    );

    // What the next run would change for them: nothing but the owner tag, where the notes say nothing else.
    let target_args = TargetArgs {
        offline: false,
        demo: false,
        demo_state: None,
        upgrade: false,
        node: None,
    };
    let target = Target::open(&target_args, &new_estate, dir).await?;
    let addresses: Vec<String> = imported
        .iter()
        .map(|(candidate, _)| candidate.kind.address(candidate.id).to_string())
        .collect();
    let options = target.plan_options(&addresses)?;
    let plan = phoenix_core::plan(phoenix_core::resources(&new_estate), target.managers(), &options).await?;
    let colour = if output::stdout_colour() {
        Colour::Always
    } else {
        Colour::Never
    };
    println!("\nWhat the next run would change for them:\n");
    print!("{}", render::plan_text(&plan, colour));
    let failed = !failures.is_empty();
    if !args.adopt {
        if !args.dry_run {
            println!(
                "\nNothing on the cluster was changed. `phoenix apply {}` makes the changes above, tagging them as \
                 owned.",
                addresses.join(" ")
            );
        }
        return Ok(if failed { Exit::Failure } else { Exit::Success });
    }
    let adopt = adopt(args, &target, &plan, &addresses).await?;
    Ok(if failed { Exit::Failure } else { adopt })
}

/// Reads every candidate, a few at a time; the guests that could not be read are returned with why.
async fn read_all(
    session: &Session,
    estate: &phoenix_core::Estate,
    dir: &std::path::Path,
    found: &[Candidate],
) -> miette::Result<(Vec<(Candidate, Imported)>, Vec<(Candidate, String)>)> {
    let scripts = target::guest_scripts(estate, dir)?;
    let containers = Arc::new(phoenix_lxc::manager(session, estate, scripts.clone()));
    let vms = Arc::new(phoenix_vm::manager(
        session,
        estate,
        scripts,
        target::user_data_template(dir)?,
    ));
    let permits = Arc::new(Semaphore::new(READS_AT_ONCE));
    let mut reads = JoinSet::new();
    for (index, candidate) in found.iter().cloned().enumerate() {
        let (containers, vms, permits) = (Arc::clone(&containers), Arc::clone(&vms), Arc::clone(&permits));
        reads.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (node, id, status) = (&candidate.node, candidate.id, &candidate.status);
            let read = match candidate.kind {
                GuestKind::Container => containers.driver().import(node, id, status).await,
                GuestKind::Vm => vms.driver().import(node, id, status).await,
            };
            (index, candidate, read)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = reads.join_next().await {
        results.push(joined.into_diagnostic()?);
    }
    results.sort_by_key(|(index, ..)| *index);
    let mut imported = Vec::new();
    let mut failures = Vec::new();
    for (_, candidate, read) in results {
        match read {
            Ok(entry) => imported.push((candidate, entry)),
            Err(error) => failures.push((candidate, error.to_string())),
        }
    }
    Ok((imported, failures))
}

/// Lists what was imported, with each guest's notes.
fn print_imported(imported: &[(Candidate, Imported)]) {
    println!("Imported:");
    for (candidate, entry) in imported {
        println!(
            "  {} {} on {}, {}",
            candidate.kind.address(candidate.id),
            candidate.name,
            candidate.node,
            candidate.status
        );
        for note in &entry.notes {
            println!("      note: {note}");
        }
    }
}

/// Tags the imported guests as owned, after showing which and asking; reports exactly what was tagged.
async fn adopt(
    args: &ImportArgs,
    target: &Target,
    plan: &phoenix_core::Plan,
    addresses: &[String],
) -> miette::Result<Exit> {
    println!(
        "\nTo tag as owned by Phoenix (`phoenix`): {}",
        addresses.join(", ")
    );
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(miette::miette!(
                code = "phoenix::import::needs_yes",
                help = "pass --yes to adopt without a terminal to confirm on; the configuration is written",
                "refusing to adopt without confirmation"
            ));
        }
        eprint!("Tag them? Only 'yes' is accepted: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).ok();
        if answer.trim() != "yes" {
            println!("Nothing was tagged; the configuration is written.");
            return Ok(Exit::Failure);
        }
    }
    let lock = RunLock::acquire(target, &args.lock).await?;
    let (handle, signal) = StopHandle::new();
    let options = ExecuteOptions::default();
    let run = phoenix_core::operate(plan, &Operation::Adopt, target.managers(), &options, signal, None);
    let result = crate::interrupt::interruptible(handle, run).await;
    lock.release().await;
    let Some(result) = result else {
        eprintln!(
            "Abandoned: the tagging in flight was cut off; `phoenix plan` shows which guests are owned."
        );
        return Ok(Exit::Interrupted);
    };
    let report = result?;
    for line in &report.resources {
        match &line.outcome {
            Outcome::Changed { .. } => println!("adopted:     {}", line.address),
            Outcome::Unchanged => println!("owned:       {} (already)", line.address),
            Outcome::Failed { error, .. } => eprintln!("adopt {}: {error}", line.address),
            Outcome::Skipped { reason } => eprintln!("adopt {}: skipped: {reason}", line.address),
            Outcome::NotStarted => eprintln!("adopt {}: not started", line.address),
        }
    }
    Ok(Exit::of(&report))
}

/// Writes a configuration file whole (a new file beside it, then a rename), keeping the permissions of the
/// file it replaces.
fn write_config(path: &std::path::Path, text: &str) -> miette::Result<()> {
    let mode = std::fs::metadata(path)
        .ok()
        .map(|metadata| metadata.permissions().mode() & 0o7777);
    files::write_private(path, text.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode.unwrap_or(0o644))).into_diagnostic()
}

fn guests_word(kind: FileKind, count: usize) -> String {
    let word = match (kind, count) {
        (FileKind::Lxc, 1) => "container",
        (FileKind::Lxc, _) => "containers",
        (_, 1) => "VM",
        _ => "VMs",
    };
    format!("{count} {word} added")
}
