//! The re-authentication lock beside the session file: at most one process re-authenticates at
//! a time for one session file, and a lock all (the agent's, then the file's removal) is one
//! step that no re-authentication lands in the middle of.
//!
//! It is an `flock` on `<name>.reauth.lock` (mode 0600, never removed), so it dies with its
//! holder like the writers' lock. Its holder writes its pid into `<name>.reauth.pid` beside it,
//! for the messages of the processes that wait: not into the lock file, whose bytes Windows
//! lets no other process read while it is locked (its locks are mandatory).
//!
//! **Lock order.** A process takes the re-authentication lock first and the writers' lock
//! (`<name>.lock`) inside it (to write the new token), never the other way round: a writer
//! never waits for the re-authentication lock while it holds the writers' lock, so the two
//! can never deadlock.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use super::lock::{Waited, wait_for_flock};
use super::{TokenFile, sys};
use crate::error::Error;

/// The re-authentication lock, held; released when dropped.
#[derive(Debug)]
pub(crate) struct ReauthLock {
    _file: File,
}

/// What a try for the re-authentication lock came to.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Taken.
    Held(ReauthLock),
    /// Not taken: the wait passed its bound.
    TimedOut,
    /// Not taken: the one waiting no longer wants it.
    Unwanted,
}

impl TokenFile {
    /// The re-authentication lock's path: `<name>.reauth.lock` beside the session file.
    pub(crate) fn reauth_lock_path(&self) -> PathBuf {
        let mut path = self.path().as_os_str().to_owned();
        path.push(".reauth.lock");
        path.into()
    }

    /// Where the re-authentication lock's holder writes its pid: `<name>.reauth.pid`.
    pub(crate) fn reauth_pid_path(&self) -> PathBuf {
        let mut path = self.path().as_os_str().to_owned();
        path.push(".reauth.pid");
        path.into()
    }

    /// Takes the re-authentication lock, waiting for another holder at most
    /// [`TokenFile::reauth_wait`], and while `wanted()` says so; `waiting(pid)` is told once,
    /// with the holder's pid if it wrote one, when the lock is held elsewhere. Blocking.
    ///
    /// # Errors
    ///
    /// [`Error::WriteFile`] when the lock file cannot be made or locked.
    pub(crate) fn take_reauth_lock(
        &self,
        wanted: impl Fn() -> bool,
        waiting: impl FnOnce(Option<u32>),
    ) -> Result<Taken, Error> {
        self.create_dir()?;
        let path = self.reauth_lock_path();
        let file = sys::open_beside(&path).map_err(|e| Error::write(&path, e))?;
        let pid_path = self.reauth_pid_path();
        let told = || waiting(holder_pid(&pid_path));
        match wait_for_flock(&file, self.reauth_wait, wanted, told) {
            Ok(Waited::Taken) => {
                // The pid is for others' messages only: a failure to write it is no failure of
                // the lock.
                let _ = write_pid(&pid_path);
                Ok(Taken::Held(ReauthLock { _file: file }))
            }
            Ok(Waited::TimedOut(_)) => Ok(Taken::TimedOut),
            Ok(Waited::Unwanted) => Ok(Taken::Unwanted),
            Err(e) => Err(Error::write(&path, e)),
        }
    }
}

/// Writes this process's pid into the pid file, in place: a waiter may read it half written,
/// and then prints no pid.
fn write_pid(path: &Path) -> std::io::Result<()> {
    let mut file = sys::open_beside(path)?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(std::process::id().to_string().as_bytes())
}

/// The pid the holder wrote, if it did.
fn holder_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(16)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}
