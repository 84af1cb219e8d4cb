//! The re-authentication lock beside the session file: at most one process re-authenticates at
//! a time for one session file, and a lock all (the agent's, then the file's removal) is one
//! step that no re-authentication lands in the middle of.
//!
//! It is an `flock` on `<name>.reauth.lock` (mode 0600, never removed), so it dies with its
//! holder like the writers' lock. Its holder writes its pid into it, for the messages of the
//! processes that wait.
//!
//! **Lock order.** A process takes the re-authentication lock first and the writers' lock
//! (`<name>.lock`) inside it (to write the new token), never the other way round: a writer
//! never waits for the re-authentication lock while it holds the writers' lock, so the two
//! can never deadlock.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::TokenFile;
use super::lock::{Waited, wait_for_flock};
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
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::write(&path, e))?;
        let holder = file.try_clone().ok();
        let told = move || {
            let pid = holder.and_then(|mut holder| holder_pid(&mut holder));
            waiting(pid);
        };
        match wait_for_flock(&file, self.reauth_wait, wanted, told) {
            Ok(Waited::Taken) => {
                // The pid is for others' messages only: a failure to write it is no failure of
                // the lock.
                let pid = std::process::id().to_string();
                let _ = file.set_len(0).and_then(|()| {
                    file.rewind()?;
                    file.write_all(pid.as_bytes())
                });
                Ok(Taken::Held(ReauthLock { _file: file }))
            }
            Ok(Waited::TimedOut(_)) => Ok(Taken::TimedOut),
            Ok(Waited::Unwanted) => Ok(Taken::Unwanted),
            Err(e) => Err(Error::write(&path, e)),
        }
    }
}

/// The pid the holder wrote, if it did.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(16).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
