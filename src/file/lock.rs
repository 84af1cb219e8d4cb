//! The writers' lock on the session file (`flock` on its lock file, waited for at most a bound),
//! and the tidying of temp files that writers which died mid-write left behind.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use super::{TEMP_RANDOM_LEN, TEMP_SUFFIX, TokenFile};
use crate::error::Error;

const MAX_LOCK_RETRY_PAUSE: Duration = Duration::from_millis(20);

impl TokenFile {
    /// Removes stale temp files if no writer holds the lock now; creates nothing, waits for
    /// nothing.
    pub(crate) fn remove_stale_temp_files_if_idle(&self) {
        // Every writer creates the lock file before any temp file: no lock file, no temp files.
        let Ok(file) = OpenOptions::new().read(true).open(&self.lock_path) else {
            return;
        };
        if file.try_lock().is_ok() {
            self.remove_stale_temp_files();
        }
    }

    /// Removes temp files that a writer of this library left behind when it died mid-write.
    /// Only called under the lock, when no live writer can have a temp file.
    pub(super) fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
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
        self.create_dir()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            // Named for the session file, as `Error::WriteFile` promises: the lock is only how
            // the session file is written, and "the session file …/token.lock" misleads.
            .map_err(|e| Error::write(&self.path, e))?;
        // `flock` has no timeout of its own: try, and pause between tries, until the bound.
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(Error::write(&self.path, e)),
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(Error::Locked {
                    path: self.lock_path.clone(),
                    waited,
                });
            }
            std::thread::sleep(pause.min(wait - waited));
            pause = (pause * 2).min(MAX_LOCK_RETRY_PAUSE);
        }
    }
}

/// The writers' lock; released when dropped (closing the file releases its `flock`).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}
