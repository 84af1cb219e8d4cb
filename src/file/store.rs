//! The session file's reads and writes: [`TokenStore`] for [`TokenFile`], and the steps they
//! share (a read with its version, the whole-file replace, the directory's sync).

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::time::{Duration, Instant};

use super::{TEMP_RANDOM_LEN, TEMP_SUFFIX, TokenFile, dir_of, sys};
use crate::error::{CorruptReason, Error};
use crate::store::{Stored, Swap, TokenStore, Version};
use crate::token::Token;

/// The pause between two tries of a rename (or removal) that Windows refused because a reader
/// had the file open. A reader of this crate holds it for one read, microseconds, and opens it
/// again as soon as it wants: a writer that paused longer, as it does for a held lock, would
/// seldom find the file free when many read it in a loop (measured under Wine: 20 ms pauses
/// took 0.5 s a write beside one reader in a loop). A try is one system call; a writer tries
/// this often only while a reader is in its way.
const REPLACE_PAUSE: Duration = Duration::from_millis(1);

/// How long a reader waits, at most, for a writer that holds the writers' lock, before it opens
/// the file (Windows only, where its open would stand in the writer's rename): as long as a
/// few writes take, so that a writer stopped with the lock held (Ctrl-Z) delays reads by no
/// more than a person notices. Reading is safe all the same; this only lets the writer in
/// first.
const READER_DEFERS: Duration = Duration::from_millis(50);

/// The session file's reads and writes: blocking, as the trait says. Their errors name the
/// path (or the lock file), never the content.
impl TokenStore for TokenFile {
    /// Reads the token and the version of the file it came from. A missing, empty or blank
    /// file is no token. [`Error::ReadFile`] when the file cannot be read,
    /// [`Error::CorruptFile`] when it holds no token (too large, not a regular file, not UTF-8,
    /// not a bearer token).
    fn load(&self) -> Result<Stored, Error> {
        self.defer_to_writer();
        self.read_snapshot()
    }

    /// The explicit write (after an unlock): waits for the lock at most
    /// [`TokenFile::lock_wait`], then replaces the file whole. Under the lock no live writer
    /// has a temp file, so any left are from writers that died mid-write: they go first.
    /// [`Error::Locked`] past the bound, [`Error::WriteFile`] when the file or its directory
    /// cannot be written.
    fn store(&self, token: &Token) -> Result<Version, Error> {
        let _lock = self.lock(self.lock_wait)?;
        self.remove_stale_temp_files();
        self.replace_locked(token, self.lock_wait)
    }

    /// The refresh write: under the lock (waited for at most
    /// [`TokenFile::refresh_lock_wait`]), replaces the file only if it still holds `expected`.
    /// It never recreates a file another process removed, nor replaces a token another
    /// process wrote.
    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        let _lock = self.lock(self.refresh_lock_wait)?;
        let current = self.read_snapshot()?;
        if current.token.as_ref() == expected {
            self.replace_locked(new, self.refresh_lock_wait)
                .map(Swap::Replaced)
        } else {
            Ok(Swap::Lost(current))
        }
    }

    /// Removes the session file (what a lock does), under the lock waited for at most
    /// [`TokenFile::lock_wait`]. A missing file is not an error. [`Error::WriteFile`] when the
    /// file cannot be removed: it then still holds its token.
    fn clear(&self) -> Result<(), Error> {
        let _lock = self.lock(self.lock_wait)?;
        self.remove_locked()
    }

    /// One `stat` of the file.
    fn version(&self) -> Result<Option<Version>, Error> {
        match sys::stamp_at(&self.path) {
            Ok(stamp) => Ok(Some(Version::file(stamp))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::read(&self.path, e)),
        }
    }

    /// Removes temp files of writers that died mid-write, if no one holds the lock now; creates
    /// nothing, waits for nothing.
    fn tidy(&self) {
        // Every writer creates the lock file before any temp file: no lock file, no temp files.
        if let Ok(lock) = fs::File::open(&self.lock_path)
            && lock.try_lock().is_ok()
        {
            self.remove_stale_temp_files();
        }
    }

    /// The session file itself.
    fn watched_file(&self) -> Option<std::path::PathBuf> {
        Some(self.path().to_owned())
    }

    /// `<name>.reauth.lock` beside the file, waited for at most [`TokenFile::reauth_wait`].
    fn reauth_lock(&self) -> Option<crate::file::ReauthLock> {
        let mut path = self.path().as_os_str().to_owned();
        path.push(".reauth.lock");
        Some(crate::file::ReauthLock::new(path).wait(self.reauth_wait))
    }
}

impl TokenFile {
    /// On Windows, waits (at most [`READER_DEFERS`]) while a writer holds the writers' lock: a
    /// reader that opened the file now could keep the writer's rename out, and many readers in
    /// a loop would keep it out for seconds (measured under Wine: a median 0.5 s a write
    /// beside one reader in a loop). The lock is only looked at, never held during the read:
    /// readers still take no lock. Not for the reads made under the writers' lock.
    fn defer_to_writer(&self) {
        if !sys::OPEN_FILES_BLOCK_RENAMES {
            return;
        }
        // No lock file: no writer ever was.
        let Ok(lock) = fs::File::open(&self.lock_path) else {
            return;
        };
        let started = Instant::now();
        while let Err(fs::TryLockError::WouldBlock) = lock.try_lock_shared() {
            if started.elapsed() >= READER_DEFERS {
                return;
            }
            std::thread::sleep(REPLACE_PAUSE);
        }
        // Taken (or not to be taken): let go at once, not when the file closes, which Windows
        // may do late.
        let _ = lock.unlock();
    }

    /// Reads the token and the version of the file it came from, as the file is now: what a
    /// writer reads under the lock.
    pub(crate) fn read_snapshot(&self) -> Result<Stored, Error> {
        let read_err = |e| Error::read(&self.path, e);
        let corrupt = |reason| Error::corrupt(&self.path, reason);
        let too_large = |len| {
            let limit = TokenFile::MAX_LEN;
            corrupt(CorruptReason::TooLarge { len, limit })
        };
        // A FIFO is opened without waiting for a writer, and refused below.
        let file = match sys::open_for_read(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Stored {
                    token: None,
                    version: None,
                });
            }
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        let version = Some(Version::file(sys::stamp_of(&file).map_err(read_err)?));
        if !meta.is_file() {
            return Err(corrupt(CorruptReason::NotAFile));
        }
        if meta.len() > TokenFile::MAX_LEN {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow between the stat and the read: read one byte past the cap to know.
        (&file)
            .take(TokenFile::MAX_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        // Let go of the file before anything else: on Windows a writer cannot replace it while
        // it is open here.
        drop(file);
        if bytes.len() as u64 > TokenFile::MAX_LEN {
            return Err(too_large(bytes.len() as u64));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt(CorruptReason::NotUtf8))?;
        let token = match text.trim() {
            "" => None,
            text => Some(Token::new(text).map_err(|why| corrupt(CorruptReason::Malformed(why)))?),
        };
        Ok(Stored { token, version })
    }

    /// Removes the file; the caller holds the writers' lock. A removal that Windows refuses
    /// because a reader has the file open is tried again for at most the lock's wait.
    pub(crate) fn remove_locked(&self) -> Result<(), Error> {
        match self.while_held_open(self.lock_wait, || fs::remove_file(&self.path)) {
            Ok(()) => self.sync_dir(),
            Err(Error::WriteFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the file whole with `token`; the caller holds the writers' lock: temp file
    /// (0600) → write → fsync → rename over the file → fsync the directory. A rename that
    /// Windows refuses because a reader has the file open is tried again for at most `wait`,
    /// the write's own wait for the lock (see [`TokenFile::while_held_open`]).
    pub(crate) fn replace_locked(&self, token: &Token, wait: Duration) -> Result<Version, Error> {
        let write_err = |e: io::Error| Error::write(&self.path, e);
        // tempfile creates the file with O_EXCL, mode 0600, and a random name, so two writers
        // never share a temp file.
        let mut temp = tempfile::Builder::new()
            .prefix(&self.temp_prefix)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM_LEN)
            .tempfile_in(dir_of(&self.path))
            .map_err(write_err)?;
        sys::make_private(temp.path()).map_err(write_err)?;
        // One write: the token and its newline.
        temp.write_all(&[token.expose().as_bytes(), b"\n"].concat())
            .map_err(write_err)?;
        temp.as_file().sync_all().map_err(write_err)?;
        // Kept open (std opens it sharing its deletion, so it can be renamed so) and renamed by
        // std, which on Windows asks for POSIX semantics first: readers of this crate, which
        // share deletion too, then never stand in the way.
        let (file, temp_path) = temp.keep().map_err(|e| write_err(e.error))?;
        // A temp file that could not be renamed is removed (best effort) before the error.
        self.while_held_open(wait, || fs::rename(&temp_path, &self.path))
            .inspect_err(|_| drop(fs::remove_file(&temp_path)))?;
        drop(file);
        // The version as `version` will see it, read by the path (under the lock, the file
        // just renamed): Wine gives the temp file's handle a volume serial of 0, so that a
        // version read from it never equalled one read by the path.
        let stamp = sys::stamp_at(&self.path).map_err(write_err)?;
        self.sync_dir()?;
        Ok(Version::file(stamp))
    }

    /// Runs `step` (a rename over the session file, or its removal) until it is done, or fails
    /// otherwise than for a reader that has the file open: only Windows refuses a step for
    /// that, and a reader holds the file for a read's microseconds, a virus scanner for tens
    /// of milliseconds. Tried again every [`REPLACE_PAUSE`], for at most `wait`: the write's own wait for the writers' lock
    /// ([`TokenFile::refresh_lock_wait`] for a refresh, [`TokenFile::lock_wait`] for an
    /// explicit write or a removal), since a file held open stands in a writer's way as a held
    /// lock does. Past it, the write ends as a lock's timeout does: [`Error::Locked`], naming
    /// the session file, nothing written or removed.
    fn while_held_open(
        &self,
        wait: Duration,
        mut step: impl FnMut() -> io::Result<()>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut refused = false;
        while let Err(e) = step() {
            // Windows says "Access is denied" for a directory or a read-only file in the way
            // too: those are no reader, and no wait ends them.
            if !sys::held_open(&e) || !self.is_plain_file() {
                return Err(Error::write(&self.path, e));
            }
            refused = true;
            let waited = started.elapsed();
            if waited >= wait {
                let path = self.path.clone();
                return Err(Error::Locked { path, waited });
            }
            std::thread::sleep(REPLACE_PAUSE.min(wait - waited));
        }
        if refused {
            let waited_us = started.elapsed().as_micros() as u64;
            tracing::debug!(
                waited_us,
                "the session file was held open by another process; done once it let go"
            );
        }
        Ok(())
    }

    /// Whether the session file is a regular file that may be written over.
    fn is_plain_file(&self) -> bool {
        fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| meta.is_file() && !meta.permissions().readonly())
    }

    fn sync_dir(&self) -> Result<(), Error> {
        let dir = dir_of(&self.path);
        sys::sync_dir(dir).map_err(|e| Error::write(dir, e))
    }
}
