//! Ctrl-C during a run: the first asks the executor to stop dispatching and waits for what is in flight;
//! the second abandons the run (its future is dropped, which aborts the tasks in flight).

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
            "\nStopping: no new operations start; waiting for those in flight. Press Ctrl-C again to abandon them."
        );
        handle.stop();
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        finished = run => Some(finished),
        () = interrupts => None,
    }
}
