//! The run lock every writing command holds, so that two runs never converge one target at once.
//!
//! Two layers, as Terraform locks its state before a write: a lock file per target in the user's state
//! directory (`flock`, released by the kernel when the process ends, so it can never go stale), and, on a
//! live Proxmox, the cluster-wide lock of `phoenix_pve::runlock` (a resource pool), which also keeps out
//! runs from other machines. A run that finds either held waits, saying who holds it, until
//! `--lock-timeout`.

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use miette::{IntoDiagnostic, WrapErr};
use phoenix_pve::runlock::{Attempt, HeldBy, Holder, PoolLock};
use phoenix_pve::{Client, PveError};

use crate::args::LockArgs;
use crate::files;
use crate::target::Target;

/// How long a cluster lock's lease runs; it is renewed every third of it while the run lasts, so a run
/// that died frees the lock at most this long after.
const CLUSTER_LEASE: Duration = Duration::from_secs(300);

/// How long releasing the cluster run lock may take before the run ends without it.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// How often a waiting run tries again.
const POLL: Duration = Duration::from_secs(1);

/// The locks of one run, held until [`RunLock::release`] (or, for the local lock, the end of the process).
pub(crate) struct RunLock {
    _local: Option<LocalLock>,
    cluster: Option<PoolLock>,
}

/// A lock file, locked.
pub(crate) struct LocalLock {
    _file: File,
}

impl RunLock {
    /// Takes the locks of `target`: none offline (nothing is written), the local one on the demo target,
    /// the local and the cluster one on a live Proxmox.
    pub(crate) async fn acquire(target: &Target, args: &LockArgs) -> miette::Result<RunLock> {
        let Some(key) = target.lock_key() else {
            return Ok(RunLock {
                _local: None,
                cluster: None,
            });
        };
        let dir = files::state_dir()?.join("locks");
        files::private_dir(&dir)?;
        let local = LocalLock::acquire(&dir, &key, args.lock_timeout).await?;
        let cluster = match target.client() {
            Some(client) => cluster(client, args).await?,
            None => None,
        };
        Ok(RunLock {
            _local: Some(local),
            cluster,
        })
    }

    /// Releases the cluster lock; failing that, says so (its lease runs out by itself).
    /// Releases the locks. The cluster lock gets [`RELEASE_WITHIN`]: a run that Proxmox stopped answering
    /// (or that was abandoned) ends anyway, and the lock's lease frees it later.
    pub(crate) async fn release(self) {
        let Some(cluster) = self.cluster else {
            return;
        };
        let error = match tokio::time::timeout(RELEASE_WITHIN, cluster.release()).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} s", RELEASE_WITHIN.as_secs()),
        };
        eprintln!(
            "Warning: could not release the cluster run lock ({error}); it expires by itself within {} minutes.",
            CLUSTER_LEASE.as_secs() / 60
        );
    }
}

impl LocalLock {
    /// Locks the lock file of `key` in `dir`, waiting up to `timeout` while another process holds it.
    pub(crate) async fn acquire(dir: &Path, key: &str, timeout: Duration) -> miette::Result<LocalLock> {
        let path = lock_file(dir, key);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .into_diagnostic()
            .wrap_err_with(|| format!("failed to open the lock file {}", path.display()))?;
        let what = format!("the run lock of {key}");
        wait_for(&what, timeout, || {
            let attempt = match file.try_lock() {
                Ok(()) => Ok(Ok(())),
                Err(TryLockError::WouldBlock) => Ok(Err(holder_of(&file))),
                Err(TryLockError::Error(error)) => Err(error)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("failed to lock {}", path.display())),
            };
            std::future::ready(attempt)
        })
        .await?;
        // Who holds it, for the next run to name; the lock, not this text, is what excludes.
        let holder = Holder::current(Duration::ZERO).to_text();
        file.set_len(0)
            .and_then(|()| file.write_all_at(holder.as_bytes(), 0))
            .into_diagnostic()
            .wrap_err_with(|| format!("failed to write {}", path.display()))?;
        Ok(LocalLock { _file: file })
    }
}

/// Takes the cluster-wide lock; a token without `Pool.Allocate` runs with the local lock only, loudly.
async fn cluster(client: &Arc<Client>, args: &LockArgs) -> miette::Result<Option<PoolLock>> {
    let what = format!("the cluster run lock (pool {})", phoenix_pve::runlock::LOCK_POOL);
    let forbidden = std::cell::Cell::new(false);
    let flag = &forbidden;
    let taken = wait_for(&what, args.lock_timeout, move || async move {
        match PoolLock::try_acquire(client, CLUSTER_LEASE, args.force_unlock).await {
            Ok(Attempt::Acquired(lock)) => Ok(Ok(Some(lock))),
            Ok(Attempt::Held(holder)) => Ok(Err(match holder {
                HeldBy::Phoenix(holder) => holder.to_string(),
                other @ HeldBy::Other(_) => other.to_string(),
            })),
            Err(PveError::Api { status: 403, .. }) => {
                flag.set(true);
                Ok(Ok(None))
            }
            Err(error) => Err(miette::Report::new(error).wrap_err("failed to take the cluster run lock")),
        }
    })
    .await?;
    if forbidden.get() {
        eprintln!(
            "Warning: no cluster-wide run lock: the token may not create the pool {} (it needs Pool.Allocate on /pool/{}); only runs from this machine are kept apart.",
            phoenix_pve::runlock::LOCK_POOL,
            phoenix_pve::runlock::LOCK_POOL
        );
    }
    Ok(taken)
}

/// Tries `attempt` until it succeeds (`Ok(Ok)`) or `timeout` has passed while it said who holds the lock
/// (`Ok(Err(holder))`). Says once, on standard error, who it waits for.
async fn wait_for<T, Attempt>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Attempt,
) -> miette::Result<T>
where
    Attempt: Future<Output = miette::Result<Result<T, String>>>,
{
    let started = Instant::now();
    let mut announced = false;
    loop {
        let holder = match attempt().await? {
            Ok(taken) => return Ok(taken),
            Err(holder) => holder,
        };
        let waited = started.elapsed();
        if waited >= timeout {
            let after = if timeout.is_zero() {
                String::new()
            } else {
                format!(" (waited {})", seconds(waited))
            };
            return Err(miette::miette!(
                code = "phoenix::lock::held",
                help = "another run is working on this target: wait for it, or pass a longer --lock-timeout",
                "{what} is held by {holder}{after}"
            ));
        }
        if !announced {
            eprintln!(
                "Waiting for {what}, held by {holder} (up to {})...",
                seconds(timeout)
            );
            tracing::info!(%holder, "waiting for {what}");
            announced = true;
        }
        tokio::time::sleep(POLL.min(timeout - waited)).await;
    }
}

/// The lock file of a key: readable letters of the key, and a hash of all of it, so that keys which read
/// alike still get files of their own.
fn lock_file(dir: &Path, key: &str) -> PathBuf {
    let readable: String = crate::target::file_name_of(key).chars().take(100).collect();
    // FNV-1a: stable across builds and platforms, which `DefaultHasher` does not promise.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    dir.join(format!("{readable}-{hash:016x}.lock"))
}

/// Who holds a lock file, from what it wrote there.
fn holder_of(file: &File) -> String {
    let mut buffer = vec![0; 512];
    let read = file.read_at(&mut buffer, 0).unwrap_or(0);
    let text = String::from_utf8_lossy(&buffer[..read]);
    Holder::parse(&text).map_or_else(
        || "another process (its lock file names no holder)".to_owned(),
        |holder| holder.to_string(),
    )
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LocalLock;

    #[tokio::test]
    async fn a_second_lock_on_one_endpoint_fails_at_once_naming_the_holder() {
        let dir = std::env::temp_dir().join(format!("phoenix-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = "https://pve.example:8006";
        let first = LocalLock::acquire(&dir, key, Duration::ZERO).await.expect("free");
        let error = LocalLock::acquire(&dir, key, Duration::ZERO)
            .await
            .err()
            .expect("held");
        let message = error.to_string();
        assert!(
            message.starts_with("the run lock of https://pve.example:8006 is held by "),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        // Another endpoint has a lock of its own.
        let other = LocalLock::acquire(&dir, "https://pve-2.example:8006", Duration::ZERO).await;
        assert!(other.is_ok());
        drop(first);
        let again = LocalLock::acquire(&dir, key, Duration::ZERO).await;
        assert!(again.is_ok(), "released when dropped");
    }

    #[tokio::test]
    async fn a_waiting_lock_is_taken_when_the_holder_lets_go() {
        let dir = std::env::temp_dir().join(format!("phoenix-lock-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let first = LocalLock::acquire(&dir, "demo", Duration::ZERO)
            .await
            .expect("free");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(first);
        });
        let second = LocalLock::acquire(&dir, "demo", Duration::from_secs(10)).await;
        assert!(second.is_ok());
        release.await.expect("joins");
    }
}
