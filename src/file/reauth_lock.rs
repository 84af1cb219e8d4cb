//! The re-authentication lock beside the session file: at most one process re-authenticates at
//! a time for one session file, and a lock all (the agent's, then the file's removal) is one
//! step that no re-authentication lands in the middle of.
//!
//! **Lock order.** A process takes the re-authentication lock first and the writers' lock
//! (`<name>.lock`) inside it (to write the new token), never the other way round: a writer
//! never waits for the re-authentication lock while it holds the writers' lock, so the two
//! can never deadlock.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lock::{Taken, wait_for_flock};
use super::{TokenFile, sys};
use crate::error::Error;

/// A re-authentication lock shared by every process of one store: at most one of them
/// re-authenticates at a time, and a lock all is one step no re-authentication lands in the
/// middle of. The session file's is `<name>.reauth.lock` beside it
/// ([`TokenStore::reauth_lock`](crate::store::TokenStore::reauth_lock)); a store of your own
/// names one with [`ReauthLock::new`], and the session takes it around its recoveries and lock
/// alls.
///
/// It is an exclusive lock on the file at its path (`flock`; `LockFileEx` on Windows; created
/// with mode 0600 on Unix, its directory 0700, never removed), held by one process at a time
/// and released by the OS when its holder dies. The holder writes its pid into
/// `<path without .lock>.pid` beside it (`<name>.reauth.pid` for the session file), for the
/// messages of the processes that wait: not into the lock file, whose bytes Windows lets no
/// other process read while it is locked (its locks are mandatory).
///
/// ```
/// use std::time::Duration;
/// use tower_agent_session::ReauthLock;
///
/// let lock = ReauthLock::new("/run/user/1000/agent/keyring.reauth.lock")
///     .wait(Duration::from_secs(30));
/// assert_eq!(lock.bound(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReauthLock {
    path: PathBuf,
    wait: Duration,
}

impl ReauthLock {
    /// The lock at `path`, waited for at most [`TokenFile::DEFAULT_REAUTH_WAIT`].
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            wait: TokenFile::DEFAULT_REAUTH_WAIT,
        }
    }

    /// How long a recovery, or a lock all, waits for another holder (see
    /// [`TokenFile::reauth_wait`]).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The lock file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long a wait for it lasts at most.
    #[must_use]
    pub fn bound(&self) -> Duration {
        self.wait
    }

    /// Where the holder writes its pid: the lock's path with `.lock` replaced by `.pid` (or
    /// `.pid` added).
    pub(crate) fn pid_path(&self) -> PathBuf {
        let text = self.path.as_os_str().to_string_lossy();
        let stem = text.strip_suffix(".lock").unwrap_or(&text);
        PathBuf::from(format!("{stem}.pid"))
    }

    /// Takes the lock, waiting for another holder until `until` at the latest, and while
    /// `wanted()` says so; `waiting(pid)` is told once, with the holder's pid if it wrote one,
    /// when the lock is held elsewhere. Blocking.
    ///
    /// # Errors
    ///
    /// [`Error::WriteFile`] when the lock file cannot be made or locked.
    pub(crate) fn take(
        &self,
        until: Instant,
        wanted: impl Fn() -> bool,
        waiting: impl FnOnce(Option<u32>),
    ) -> Result<Taken, Error> {
        super::create_private_dir(super::dir_of(&self.path))?;
        let pid_path = self.pid_path();
        let told = || waiting(holder_pid(&pid_path));
        let wait = until.saturating_duration_since(Instant::now());
        let taken = wait_for_flock(&self.path, &self.path, wait, wanted, told)?;
        if let Taken::Held(_) = taken {
            // The pid is for others' messages only: a failure to write it is no failure of the
            // lock.
            let _ = write_pid(&pid_path);
        }
        Ok(taken)
    }
}

/// Writes this process's pid into the pid file, in place: a waiter may read it half written,
/// and then prints no pid.
fn write_pid(path: &Path) -> std::io::Result<()> {
    let mut file = sys::open_beside(path)?;
    // Just opened: written from its start.
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())
}

/// The pid the holder wrote, if it did.
fn holder_pid(path: &Path) -> Option<u32> {
    let text = std::io::read_to_string(File::open(path).ok()?.take(16)).ok()?;
    text.trim().parse().ok()
}
