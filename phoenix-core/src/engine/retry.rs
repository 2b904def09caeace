//! One retry policy for dispatching operations: exponential backoff with jitter, transient errors only.
//!
//! Dispatch and wait are separate: an operation is dispatched again only when the dispatch itself failed
//! transiently; once it was accepted (Proxmox returned a task id), the caller waits for it and never
//! dispatches it a second time. "Already exists" on a retry means the first attempt did succeed.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::engine::journal;
use crate::engine::manager::ManagerError;

/// What a retry policy needs to know about an error.
pub trait Retryable {
    /// Worth dispatching again: the operation was not accepted (a 5xx, a reset connection, `got timeout`).
    fn is_transient(&self) -> bool;
    /// The target already exists; on a retry this means the first attempt did succeed.
    fn is_already_exists(&self) -> bool;
}

impl Retryable for ManagerError {
    fn is_transient(&self) -> bool {
        ManagerError::is_transient(self)
    }

    fn is_already_exists(&self) -> bool {
        matches!(self, ManagerError::AlreadyExists { .. })
    }
}

/// How often and how patiently to retry a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delay before the second attempt; it doubles with each attempt.
    pub initial_delay: Duration,
    /// Upper bound of a delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
        }
    }
}

/// How a dispatch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatched<T> {
    /// The operation was accepted; its result.
    Accepted(T),
    /// A retry found the work already done: an earlier attempt succeeded but its answer was lost.
    AlreadyDone,
}

impl RetryPolicy {
    /// The delay after a failed `attempt` (1-based): exponential, capped, with jitter in its upper half.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let base = self
            .initial_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let half = base / 2;
        let jitter = half.mul_f64(random_fraction());
        half + jitter
    }

    /// Runs an idempotent `operation` (a read, a `PUT` of whole values) until it succeeds, fails
    /// permanently, or the attempts are used up.
    pub async fn retry<T, E, F, Fut>(&self, operation: F) -> Result<T, E>
    where
        E: Retryable + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.retry_if(operation, E::is_transient).await
    }

    /// Runs `operation` again, with backoff, while it fails with an error `worth_retrying` accepts and
    /// attempts are left. A stopped run ends the waiting with the last error.
    pub async fn retry_if<T, E, F, Fut>(
        &self,
        mut operation: F,
        worth_retrying: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            match operation().await {
                Err(error) if worth_retrying(&error) && attempt < attempts => {
                    tracing::debug!(attempt, %error, "transient failure, trying again");
                    if journal::pause(self.delay(attempt)).await.is_err() {
                        return Err(error);
                    }
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Runs `operation` until it is accepted, fails permanently, or the attempts are used up.
    pub async fn dispatch<T, E, F, Fut>(&self, mut operation: F) -> Result<Dispatched<T>, E>
    where
        E: Retryable + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let counted = || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            operation()
        };
        match self.retry(counted).await {
            Ok(value) => Ok(Dispatched::Accepted(value)),
            Err(error) if error.is_already_exists() && attempts.into_inner() > 1 => {
                Ok(Dispatched::AlreadyDone)
            }
            Err(error) => Err(error),
        }
    }
}

/// A number in [0, 1) that differs between calls, without a random-number dependency.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = quick();
        for attempt in 1..10 {
            let delay = policy.delay(attempt);
            let base = Duration::from_millis(100 * (1 << (attempt - 1).min(20))).min(Duration::from_secs(1));
            assert!(
                delay >= base / 2 && delay <= base,
                "attempt {attempt}: {delay:?} within [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_then_accepted() {
        let calls = AtomicU32::new(0);
        let result = quick()
            .dispatch(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(ManagerError::Transient {
                        message: "502 bad gateway".into(),
                    })
                } else {
                    Ok("UPID:pve1:1")
                }
            })
            .await;
        assert_eq!(result, Ok(Dispatched::Accepted("UPID:pve1:1")));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_operations_are_retried_on_transient_errors_only() {
        let calls = AtomicU32::new(0);
        let read = quick()
            .retry(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(ManagerError::Transient {
                        message: "500 cluster resources".into(),
                    })
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(read, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let refused: Result<(), _> = quick()
            .retry(|| async { Err(ManagerError::failed("403 permission denied")) })
            .await;
        assert!(matches!(refused, Err(ManagerError::Failed { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn already_exists_on_a_retry_counts_as_success() {
        let calls = AtomicU32::new(0);
        let result: Result<Dispatched<()>, _> = quick()
            .dispatch(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(ManagerError::Transient {
                        message: "got timeout".into(),
                    })
                } else {
                    Err(ManagerError::AlreadyExists {
                        message: "CT 101 already exists".into(),
                    })
                }
            })
            .await;
        assert_eq!(result, Ok(Dispatched::AlreadyDone));
    }

    #[tokio::test(start_paused = true)]
    async fn already_exists_on_the_first_attempt_is_an_error() {
        let result: Result<Dispatched<()>, _> = quick()
            .dispatch(|| async {
                Err(ManagerError::AlreadyExists {
                    message: "exists".into(),
                })
            })
            .await;
        assert!(matches!(result, Err(ManagerError::AlreadyExists { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_exhausted_attempts_stop() {
        let calls = AtomicU32::new(0);
        let result: Result<Dispatched<()>, _> = quick()
            .dispatch(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ManagerError::Transient {
                    message: "503".into(),
                })
            })
            .await;
        assert!(matches!(result, Err(ManagerError::Transient { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let refused: Result<Dispatched<()>, _> = quick()
            .dispatch(|| async { Err(ManagerError::failed("400 bad parameter")) })
            .await;
        assert!(matches!(refused, Err(ManagerError::Failed { .. })));
    }
}
