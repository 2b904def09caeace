//! Progress of a run: a live bar on a terminal, one plain line per event otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use phoenix_core::{Address, Event, Outcome};
use tokio::sync::mpsc::UnboundedReceiver;

/// Follows the executor's events until the run ends.
pub(crate) async fn follow(mut events: UnboundedReceiver<Event>, total: usize, terminal: bool) {
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} {wide_msg}")
                .expect("the template is valid"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    // What is in flight, with what each one waits for.
    let mut in_flight: BTreeMap<Address, Option<String>> = BTreeMap::new();
    while let Some(event) = events.recv().await {
        let line = match &event {
            Event::Started(address) => {
                in_flight.insert(address.clone(), None);
                format!("started   {address}")
            }
            Event::Waiting { address, what } => {
                if let Some(waiting) = in_flight.get_mut(address) {
                    waiting.clone_from(what);
                }
                match what {
                    Some(what) => format!("waiting   {address}: {what}"),
                    None => String::new(),
                }
            }
            Event::Finished(report) => {
                in_flight.remove(&report.address);
                let seconds = report.duration.as_secs_f64();
                match &report.outcome {
                    Outcome::Changed { .. } => format!("changed   {} ({seconds:.1}s)", report.address),
                    Outcome::Unchanged => format!("unchanged {}", report.address),
                    Outcome::Failed { error, .. } => {
                        format!(
                            "FAILED    {} ({seconds:.1}s): {}",
                            report.address,
                            error.lines().next().unwrap_or_default()
                        )
                    }
                    Outcome::Skipped { reason } => format!("skipped   {}: {reason}", report.address),
                    Outcome::NotStarted => format!("not started {}", report.address),
                }
            }
        };
        match &bar {
            Some(bar) => {
                if let Event::Finished(report) = &event {
                    if !matches!(report.outcome, Outcome::Unchanged) {
                        bar.println(&line);
                    }
                    bar.inc(1);
                }
                let names: Vec<String> = in_flight
                    .iter()
                    .map(|(address, waiting)| match waiting {
                        Some(what) => format!("{address} (waiting for {what})"),
                        None => address.to_string(),
                    })
                    .collect();
                bar.set_message(if names.is_empty() {
                    String::new()
                } else {
                    format!("in flight: {}", names.join(", "))
                });
            }
            None => {
                let quiet = matches!(&event, Event::Finished(report) if report.outcome == Outcome::Unchanged);
                if !quiet && !line.is_empty() {
                    eprintln!("{line}");
                }
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
