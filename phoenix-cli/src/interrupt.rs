//! Ctrl-C during a run: the first asks the executor to stop dispatching; work in flight sends no new write
//! and gives up its waits (a Proxmox task left running is named in the report with its UPID). The second
//! abandons the run (its future is dropped, which aborts the work in flight).

use std::future::Future;

use phoenix_core::StopHandle;

/// Runs `run` until it ends, or until a second Ctrl-C (`None`). The first Ctrl-C calls `handle.stop()`.
pub(crate) async fn interruptible<T>(handle: StopHandle, run: impl Future<Output = T>) -> Option<T> {
    let interrupts = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handling here: the run can only end by itself.
            return std::future::pending::<()>().await;
        }
        eprintln!(
            "\nStopping: no new operations start, and those in flight stop at their next step; the report names any Proxmox task left running. Press Ctrl-C again to abandon at once."
        );
        handle.stop();
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    // `interrupts` first: its first poll installs the handler, so it is in place before the run starts
    // any work (a Ctrl-C at the very start would otherwise kill the process with nothing reported).
    tokio::select! {
        biased;
        () = interrupts => None,
        finished = run => Some(finished),
    }
}
