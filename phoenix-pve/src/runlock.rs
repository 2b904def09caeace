//! The cluster-wide run lock: a Proxmox resource pool named [`LOCK_POOL`], created while a run writes.
//!
//! Creating a pool is atomic in Proxmox (the cluster file system serialises writes to `user.cfg`), and a
//! second `POST /pools` of the same name fails with "already exists": that is the lock. The pool's comment
//! names the holder ([`Holder`]: user, host, process, start, lease expiry and a token unique to the run).
//! The holder renews its lease while it runs and deletes the pool at the end, only while the comment is
//! still its own. A lock whose lease has expired belongs to a run that died: the next run takes it over
//! (deletes and creates it again), as does `force`. Proxmox has no compare-and-swap for pools, so two runs
//! taking over one stale lock at the same instant could both succeed; the comment is read again just
//! before the delete to keep that window small.
//!
//! Creating and deleting pools needs `Pool.Allocate` on `/pool/phoenix-lock`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::{Client, Form, PveError};

/// The name of the pool that is the lock.
pub const LOCK_POOL: &str = "phoenix-lock";

/// Who holds a run lock, as written in the pool's comment (and in the local lock file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The user running Phoenix.
    pub user: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it took the lock, in seconds since the Unix epoch.
    pub started: u64,
    /// When its lease ends unless renewed, in seconds since the Unix epoch.
    pub expires: u64,
    /// A token unique to this run, which tells its own lock from another's.
    pub token: String,
}

/// Who holds the lock when it could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBy {
    /// Another Phoenix run.
    Phoenix(Holder),
    /// A pool of that name that Phoenix did not create; its comment.
    Other(String),
}

/// The outcome of one attempt to take the lock.
#[derive(Debug)]
pub enum Attempt {
    /// The lock is this run's until [`PoolLock::release`].
    Acquired(PoolLock),
    /// Someone else holds it.
    Held(HeldBy),
}

/// The cluster-wide lock, held: its lease is renewed in the background until it is released.
#[derive(Debug)]
pub struct PoolLock {
    client: Arc<Client>,
    holder: Holder,
    renewal: tokio::task::JoinHandle<()>,
}

impl Holder {
    /// This process, with a lease of `lease` from now.
    pub fn current(lease: Duration) -> Holder {
        let now = now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let pid = std::process::id();
        Holder {
            user: clean(
                &std::env::var("USER")
                    .or_else(|_| std::env::var("LOGNAME"))
                    .unwrap_or_default(),
            ),
            host: clean(&hostname()),
            pid,
            started: now,
            expires: now + lease.as_secs(),
            token: format!("{now:x}{nanos:08x}{pid:x}"),
        }
    }

    /// The same holder with its lease running `lease` from now.
    pub fn renewed(&self, lease: Duration) -> Holder {
        Holder {
            expires: now() + lease.as_secs(),
            ..self.clone()
        }
    }

    /// Whether the lease has run out.
    pub fn is_expired(&self) -> bool {
        now() >= self.expires
    }

    /// The text of a pool comment or lock file: one line of `key=value` fields, without `:` (which
    /// `user.cfg` uses as its separator).
    pub fn to_text(&self) -> String {
        format!(
            "phoenix run lock, holder={}@{}, pid={}, started={}, expires={}, run={}",
            self.user, self.host, self.pid, self.started, self.expires, self.token
        )
    }

    /// Reads what [`Holder::to_text`] wrote; `None` for any other text.
    pub fn parse(text: &str) -> Option<Holder> {
        let mut fields = text.trim().split(", ");
        if fields.next()? != "phoenix run lock" {
            return None;
        }
        let mut value = |key: &str| {
            fields
                .next()?
                .strip_prefix(key)?
                .strip_prefix('=')
                .map(str::to_owned)
        };
        let (user, host) = value("holder")?
            .split_once('@')
            .map(|(user, host)| (user.to_owned(), host.to_owned()))?;
        Some(Holder {
            user,
            host,
            pid: value("pid")?.parse().ok()?,
            started: value("started")?.parse().ok()?,
            expires: value("expires")?.parse().ok()?,
            token: value("run")?,
        })
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} (pid {}, since {}",
            self.user,
            self.host,
            self.pid,
            utc(self.started)
        )?;
        // A local lock has no lease: the kernel releases it when its process ends.
        if self.expires > self.started {
            write!(f, ", lease until {}", utc(self.expires))?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for HeldBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeldBy::Phoenix(holder) => holder.fmt(f),
            HeldBy::Other(comment) => write!(
                f,
                "a pool named {LOCK_POOL} that Phoenix did not create (comment: {comment:?})"
            ),
        }
    }
}

impl PoolLock {
    /// Tries once to take the lock, with a lease of `lease`, renewed every third of it while held. An
    /// expired lock is taken over; with `force`, so is a live one (never a pool Phoenix did not create).
    pub async fn try_acquire(
        client: &Arc<Client>,
        lease: Duration,
        force: bool,
    ) -> Result<Attempt, PveError> {
        let ours = Holder::current(lease);
        let mut last_seen = None;
        // A few rounds: a lock released or taken over between our create and our read is tried again.
        for _ in 0..3 {
            match create(client, &ours).await {
                Ok(()) => return Ok(Attempt::Acquired(PoolLock::start(client, ours, lease))),
                Err(error) if phoenix_core::Retryable::is_already_exists(&error) => {}
                Err(error) => return Err(error),
            }
            let Some(comment) = comment(client).await? else {
                continue;
            };
            let holder = match Holder::parse(&comment) {
                // Our own create went through although its answer said otherwise.
                Some(holder) if holder.token == ours.token => {
                    return Ok(Attempt::Acquired(PoolLock::start(client, ours, lease)));
                }
                Some(holder) => holder,
                None => return Ok(Attempt::Held(HeldBy::Other(comment))),
            };
            if !(force || holder.is_expired()) {
                return Ok(Attempt::Held(HeldBy::Phoenix(holder)));
            }
            // Take over only the lock we judged: read again, then delete.
            if comment_now(client, &comment).await? {
                tracing::warn!(
                    holder = %holder,
                    "taking over the cluster run lock {} ({})",
                    LOCK_POOL,
                    if force { "forced" } else { "its lease has expired" }
                );
                delete(client).await?;
            }
            last_seen = Some(HeldBy::Phoenix(holder));
        }
        Ok(Attempt::Held(last_seen.unwrap_or_else(|| {
            HeldBy::Other("taken and released while Phoenix tried to take it".to_owned())
        })))
    }

    /// Who holds it: this run.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Stops renewing and deletes the pool, if it is still this run's.
    pub async fn release(self) -> Result<(), PveError> {
        self.renewal.abort();
        let still_ours = comment(&self.client)
            .await?
            .and_then(|comment| Holder::parse(&comment))
            .is_some_and(|holder| holder.token == self.holder.token);
        if still_ours {
            delete(&self.client).await?;
        } else {
            tracing::warn!(
                "the cluster run lock {LOCK_POOL} is no longer this run's (its lease ran out and another run took it); left as it is"
            );
        }
        Ok(())
    }

    fn start(client: &Arc<Client>, holder: Holder, lease: Duration) -> PoolLock {
        let renewal = tokio::spawn(renew(Arc::clone(client), holder.clone(), lease));
        PoolLock {
            client: Arc::clone(client),
            holder,
            renewal,
        }
    }
}

/// Renews the lease every third of it, for as long as the pool's comment is still this run's.
async fn renew(client: Arc<Client>, holder: Holder, lease: Duration) {
    let period = (lease / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        let current = match comment(&client).await {
            Ok(current) => current.and_then(|comment| Holder::parse(&comment)),
            Err(error) => {
                tracing::warn!(%error, "could not read the cluster run lock to renew it; trying again");
                continue;
            }
        };
        if current.is_none_or(|current| current.token != holder.token) {
            tracing::warn!(
                "the cluster run lock {LOCK_POOL} was taken over by another run; no longer renewing"
            );
            return;
        }
        let form = Form::new()
            .text("poolid", LOCK_POOL)
            .text("comment", holder.renewed(lease).to_text());
        if let Err(error) = client.put::<serde_json::Value>("/pools", &form).await {
            tracing::warn!(%error, "could not renew the cluster run lock; trying again");
        }
    }
}

/// Creates the pool. Sent again on transient failures: if a lost answer hid that an attempt went
/// through, the next one finds the pool, and [`PoolLock::try_acquire`] recognises its own token in it.
async fn create(client: &Client, holder: &Holder) -> Result<(), PveError> {
    let form = Form::new()
        .text("poolid", LOCK_POOL)
        .text("comment", holder.to_text());
    client
        .settings()
        .retry
        .retry(|| client.post::<serde_json::Value>("/pools", &form))
        .await
        .map(drop)
}

/// The pool's comment, or `None` when there is no such pool.
async fn comment(client: &Client) -> Result<Option<String>, PveError> {
    #[derive(Deserialize)]
    struct Pool {
        comment: Option<String>,
    }
    match client.get::<Vec<Pool>>("/pools", &[("poolid", LOCK_POOL)]).await {
        Ok(pools) => Ok(pools
            .into_iter()
            .next()
            .map(|pool| pool.comment.unwrap_or_default())),
        Err(error) if is_missing(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Whether the comment is still `expected`.
async fn comment_now(client: &Client, expected: &str) -> Result<bool, PveError> {
    Ok(comment(client).await?.as_deref() == Some(expected))
}

/// Deletes the pool; sent again on transient failures, since a pool already gone is as good.
async fn delete(client: &Client) -> Result<(), PveError> {
    let query = [("poolid", LOCK_POOL)];
    match client
        .settings()
        .retry
        .retry(|| client.delete::<serde_json::Value>("/pools", &query))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if is_missing(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

fn is_missing(error: &PveError) -> bool {
    error
        .api_message()
        .is_some_and(|text| text.contains("does not exist"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Letters, digits, `.`, `_` and `-` only, so that a name cannot break the comment's fields.
fn clean(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil conversion.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Holder, utc};

    #[test]
    fn a_holder_reads_back_what_it_writes_and_nothing_else() {
        let holder = Holder::current(Duration::from_secs(300));
        assert_eq!(Holder::parse(&holder.to_text()), Some(holder.clone()));
        assert!(!holder.to_text().contains(':'));
        assert!(!holder.is_expired());
        assert_eq!(Holder::parse("a pool for the web servers"), None);
        assert_eq!(Holder::parse("phoenix run lock, holder=nobody"), None);
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }
}
