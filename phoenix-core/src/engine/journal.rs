//! The journal of the resource being worked on: every step the outside world acknowledged (a write
//! Proxmox answered, a task that finished, a script that ran), what is being waited for, and whether the
//! run was asked to stop.
//!
//! The executor gives each resource's work its own journal (a task-local); the code that talks to the
//! outside records into it without being handed anything, so a failed or interrupted resource's report
//! says exactly what was done, and which Proxmox tasks were left running. Outside a run (a plan, a test
//! calling a manager directly) recording does nothing and [`pause`] is a plain sleep.
//!
//! Work spawned onto another task does not inherit the journal; writes belong on the resource's own task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::engine::address::Address;
use crate::engine::executor::{Event, StopSignal};

tokio::task_local! {
    static CURRENT: Journal;
}

/// One step of a resource's work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What was done: `PUT /nodes/pve1/lxc/101/config`, `ran feature docker in lxc/101`.
    pub what: String,
    /// The Proxmox task that carried it out, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Where it stands.
    pub state: StepState,
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Done and acknowledged.
    Done,
    /// A task that was accepted and had not ended when Phoenix stopped waiting for it: it may still run.
    Running,
    /// A task that ended in failure.
    Failed,
}

/// The journal of one resource's work. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Journal {
    address: Address,
    steps: Arc<Mutex<Vec<Step>>>,
    stop: Option<StopSignal>,
    events: Option<UnboundedSender<Event>>,
}

/// The run was asked to stop: no new write is sent and waits end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run was interrupted")]
pub struct Interrupted;

impl Journal {
    /// A journal for the work on `address`; `stop` interrupts its waits, `events` hears what it waits for.
    pub fn new(
        address: Address,
        stop: Option<StopSignal>,
        events: Option<UnboundedSender<Event>>,
    ) -> Journal {
        Journal {
            address,
            steps: Arc::default(),
            stop,
            events,
        }
    }

    /// Runs `work` with this journal as the current one.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// The steps recorded so far.
    pub fn steps(&self) -> Vec<Step> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Step>> {
        self.steps
            .lock()
            .expect("no code panics while holding the journal")
    }

    fn push(&self, step: Step) {
        self.lock().push(step);
    }
}

fn with_current<T>(action: impl FnOnce(&Journal) -> T) -> Option<T> {
    CURRENT.try_with(action).ok()
}

/// Records a step that is done.
pub fn done(what: impl Into<String>) {
    with_current(|journal| {
        journal.push(Step {
            what: what.into(),
            task: None,
            state: StepState::Done,
        })
    });
}

/// Records that a task was accepted and is running.
pub fn task_started(what: impl Into<String>, upid: impl Into<String>) {
    with_current(|journal| {
        journal.push(Step {
            what: what.into(),
            task: Some(upid.into()),
            state: StepState::Running,
        })
    });
}

/// Records how a task ended: done when `succeeded`, failed otherwise.
pub fn task_ended(upid: &str, succeeded: bool) {
    with_current(|journal| {
        let mut steps = journal.lock();
        if let Some(step) = steps
            .iter_mut()
            .rev()
            .find(|step| step.task.as_deref() == Some(upid))
        {
            step.state = if succeeded {
                StepState::Done
            } else {
                StepState::Failed
            };
        }
    });
}

/// Says what the work is waiting for (`None`: no longer waiting), on the progress line and in the logs.
pub fn waiting(what: Option<&str>) {
    with_current(|journal| {
        if let Some(what) = what {
            tracing::info!(address = %journal.address, "waiting for {what}");
        }
        if let Some(events) = &journal.events {
            // A closed receiver only means nobody watches the progress.
            let _ = events.send(Event::Waiting {
                address: journal.address.clone(),
                what: what.map(str::to_owned),
            });
        }
    });
}

/// Whether the run this work belongs to was asked to stop.
pub fn is_interrupted() -> bool {
    with_current(|journal| journal.stop.as_ref().is_some_and(StopSignal::is_stopped)).unwrap_or(false)
}

/// Sleeps for `delay`, or until the run is asked to stop (then `Err`).
pub async fn pause(delay: Duration) -> Result<(), Interrupted> {
    let stop = with_current(|journal| journal.stop.clone()).flatten();
    let Some(mut stop) = stop else {
        tokio::time::sleep(delay).await;
        return Ok(());
    };
    if stop.is_stopped() {
        return Err(Interrupted);
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        () = stop.stopped() => Err(Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::executor::StopHandle;

    #[tokio::test]
    async fn steps_are_recorded_in_the_current_journal_only() {
        done("outside any journal");
        let journal = Journal::new(Address::Lxc(101), None, None);
        journal
            .clone()
            .scope(async {
                done("PUT /nodes/pve1/lxc/101/config");
                task_started("POST /nodes/pve1/lxc/101/status/start", "UPID:pve1:1");
                task_started("POST /nodes/pve1/lxc/101/snapshot", "UPID:pve1:2");
                task_ended("UPID:pve1:1", true);
            })
            .await;
        let steps = journal.steps();
        let states: Vec<(&str, StepState)> = steps
            .iter()
            .map(|step| (step.what.as_str(), step.state))
            .collect();
        assert_eq!(states.len(), 3);
        assert_eq!(states[0], ("PUT /nodes/pve1/lxc/101/config", StepState::Done));
        assert_eq!(states[1].1, StepState::Done);
        assert_eq!(
            states[2].1,
            StepState::Running,
            "a task never finished stays running"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_pauses_and_is_seen() {
        let (handle, signal) = StopHandle::new();
        let journal = Journal::new(Address::Lxc(101), Some(signal), None);
        journal
            .scope(async {
                assert!(!is_interrupted());
                assert_eq!(pause(Duration::from_millis(10)).await, Ok(()));
                handle.stop();
                assert!(is_interrupted());
                assert_eq!(pause(Duration::from_secs(3600)).await, Err(Interrupted));
            })
            .await;
        // Outside a run a pause is a sleep.
        assert_eq!(pause(Duration::from_millis(1)).await, Ok(()));
    }
}
