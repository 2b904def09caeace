//! How `phoenix` ends: every command returns an [`Exit`], and [`Exit::code`] is the one place that turns it
//! into a process exit status.

use std::process::ExitCode;

/// The outcome of a command, for the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It did what was asked; for `plan --detailed-exitcode`: there is nothing to change.
    Success,
    /// Something was invalid, refused, cancelled or failed; what has been printed says which.
    Failure,
    /// `plan --detailed-exitcode`: the plan has changes.
    Changes,
    /// Ctrl-C stopped the run before it ended.
    Interrupted,
}

impl Exit {
    /// How a run of the executor ends: interrupted, converged, or with a failure, skip or refusal.
    pub(crate) fn of(report: &phoenix_core::Report) -> Exit {
        if report.stopped {
            Exit::Interrupted
        } else if report.succeeded() {
            Exit::Success
        } else {
            Exit::Failure
        }
    }

    /// The process exit status: 0, 1, 2, and 130 (128 + SIGINT, as shells report an interrupted command).
    pub(crate) fn code(self) -> ExitCode {
        ExitCode::from(match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Changes => 2,
            Exit::Interrupted => 130,
        })
    }
}
