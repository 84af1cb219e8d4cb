//! The session file's locks and every wait for them: the writers' lock (`flock` on
//! `<name>.lock`), the one loop that waits for a held `flock` (this lock's and the
//! re-authentication lock's), and the tidying of temp files that writers which died mid-write
//! left behind. How long each wait lasts is [`TokenFile`]'s to say: [`TokenFile::lock_wait`],
//! [`TokenFile::refresh_lock_wait`], [`TokenFile::reauth_wait`].

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{TEMP_RANDOM_LEN, TEMP_SUFFIX, TokenFile, dir_of, sys};
use crate::error::Error;

/// The longest pause between two tries for a held lock: a holder that lets go (or is killed,
/// its lock released by the kernel) is followed this soon, and waiting costs no CPU a user
/// sees. (A file a reader holds open on Windows is tried for every 1 ms: see `store.rs`.)
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// What a wait for a held `flock` came to.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The lock is this process's, until the guard is dropped.
    Held(FileLock),
    /// Not taken within the bound: waited this long.
    TimedOut(Duration),
    /// Not taken: the waiter no longer wanted it.
    Unwanted,
}

/// Opens the lock file at `path` (creating it, see [`sys::open_beside`]) and tries its `flock`
/// until it is taken, for at most `wait` and while `wanted()`; `held_elsewhere()` is called
/// once, when the lock is first found held. `flock` has no timeout of its own: this tries, and
/// pauses between tries (1 ms, doubling up to [`MAX_PAUSE`]). A failure to open or lock the
/// file is [`Error::WriteFile`] naming `named`.
pub(super) fn wait_for_flock(
    path: &Path,
    named: &Path,
    wait: Duration,
    wanted: impl Fn() -> bool,
    held_elsewhere: impl FnOnce(),
) -> Result<Taken, Error> {
    let file = sys::open_beside(path).map_err(|e| Error::write(named, e))?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut held_elsewhere = Some(held_elsewhere);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Taken::Held(FileLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(Error::write(named, e)),
        }
        if let Some(told) = held_elsewhere.take() {
            told();
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Ok(Taken::TimedOut(waited));
        }
        if !wanted() {
            return Ok(Taken::Unwanted);
        }
        std::thread::sleep(pause.min(wait - waited));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Creates `dir` and its parents, if missing, readable by its user alone (see `sys`).
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
    sys::create_private_dir(dir).map_err(|e| Error::write(dir, e))
}

impl TokenFile {
    /// Removes temp files that a writer of this library left behind when it died mid-write.
    /// Only called under the lock, when no live writer can have a temp file.
    pub(super) fn remove_stale_temp_files(&self) {
        // A directory that cannot be read has none to remove.
        let entries = fs::read_dir(dir_of(&self.path)).into_iter().flatten();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let random = name
                .strip_prefix(self.temp_prefix.as_str())
                .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX));
            if random.is_some_and(|r| {
                r.len() == TEMP_RANDOM_LEN && r.bytes().all(|b| b.is_ascii_alphanumeric())
            }) && let Err(e) = fs::remove_file(entry.path())
            {
                tracing::debug!(error = %e, "could not remove a stale temp file");
            }
        }
    }

    /// Takes the writers' lock, creating the directory (0700) and the lock file (0600); waits for
    /// another holder at most `wait`, then fails with [`Error::Locked`].
    pub(crate) fn lock(&self, wait: Duration) -> Result<FileLock, Error> {
        create_private_dir(dir_of(&self.path))?;
        // Failures named for the session file, as `Error::WriteFile` promises: the lock is only
        // how the session file is written, and "the session file …/token.lock" misleads.
        let waited = match wait_for_flock(&self.lock_path, &self.path, wait, || true, || {})? {
            Taken::Held(lock) => return Ok(lock),
            Taken::TimedOut(waited) => waited,
            // Always wanted: never given up but for the bound.
            Taken::Unwanted => wait,
        };
        let path = self.lock_path.clone();
        Err(Error::Locked { path, waited })
    }
}

/// A held `flock`: the writers' lock or the re-authentication lock; released when dropped
/// (closing the file releases it).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}
