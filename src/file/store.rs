//! The session file's reads and writes: [`TokenStore`] for [`TokenFile`], and the steps they
//! share (a read with its version, the whole-file replace, the directory's sync).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;

use super::{FileStamp, MAX_FILE_LEN, TEMP_RANDOM_LEN, TEMP_SUFFIX, TokenFile};
use crate::error::{CorruptReason, Error};
use crate::store::{Stored, Swap, TokenStore, Version};
use crate::token::Token;

/// The session file's reads and writes: blocking, as the trait says. Their errors name the
/// path (or the lock file), never the content.
impl TokenStore for TokenFile {
    /// Reads the token and the version of the file it came from. A missing, empty or blank
    /// file is no token. [`Error::ReadFile`] when the file cannot be read,
    /// [`Error::CorruptFile`] when it holds no token (too large, not a regular file, not UTF-8,
    /// not a bearer token).
    fn load(&self) -> Result<Stored, Error> {
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
        self.replace_locked(token).map(Version::file)
    }

    /// The refresh write: under the lock (waited for at most
    /// [`TokenFile::refresh_lock_wait`]), replaces the file only if it still holds `expected`.
    /// It never recreates a file another process removed, nor replaces a token another
    /// process wrote.
    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        let _lock = self.lock(self.refresh_lock_wait)?;
        let current = self.read_snapshot()?;
        if current.token.as_ref() == expected {
            self.replace_locked(new)
                .map(|stamp| Swap::Replaced(Version::file(stamp)))
        } else {
            Ok(Swap::Lost(current))
        }
    }

    /// Removes the session file (what a lock does), under the lock waited for at most
    /// [`TokenFile::lock_wait`]. A missing file is not an error. [`Error::WriteFile`] when the
    /// file cannot be removed: it then still holds its token.
    fn clear(&self) -> Result<(), Error> {
        let _lock = self.lock(self.lock_wait)?;
        match fs::remove_file(&self.path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::write(&self.path, e)),
        }
    }

    /// One `stat` of the file.
    fn version(&self) -> Result<Option<Version>, Error> {
        Ok(self.stamp()?.map(Version::file))
    }

    /// Removes temp files of writers that died mid-write, if no one holds the lock now.
    fn tidy(&self) {
        self.remove_stale_temp_files_if_idle();
    }

    /// The session file itself.
    fn watched_file(&self) -> Option<std::path::PathBuf> {
        Some(self.path().to_owned())
    }

    /// `<name>.reauth.lock` beside the file, waited for at most [`TokenFile::reauth_wait`].
    fn reauth_lock(&self) -> Option<crate::file::ReauthLock> {
        Some(self.reauth_lock_beside())
    }
}

impl TokenFile {
    /// Reads the token and the version of the file it came from.
    fn read_snapshot(&self) -> Result<Stored, Error> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer. It has no effect on the
        // reads of a regular file, and anything else is refused below.
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Stored {
                    token: None,
                    version: None,
                });
            }
            Err(e) => return Err(Error::read(&self.path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::read(&self.path, e))?;
        if !meta.is_file() {
            return Err(Error::corrupt(&self.path, CorruptReason::NotAFile));
        }
        let too_large = |len| {
            Error::corrupt(
                &self.path,
                CorruptReason::TooLarge {
                    len,
                    limit: MAX_FILE_LEN,
                },
            )
        };
        if meta.len() > MAX_FILE_LEN {
            return Err(too_large(meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // The file may grow between the stat and the read: read one byte past the cap to know.
        (&file)
            .take(MAX_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::read(&self.path, e))?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(too_large(bytes.len() as u64));
        }
        let stamp = Some(Version::file(FileStamp::of(&meta)));
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| Error::corrupt(&self.path, CorruptReason::NotUtf8))?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(Stored {
                token: None,
                version: stamp,
            });
        }
        let token = Token::new(text)
            .map_err(|why| Error::corrupt(&self.path, CorruptReason::Malformed(why)))?;
        Ok(Stored {
            token: Some(token),
            version: stamp,
        })
    }

    /// The version of the file now, without reading it: one `stat`.
    fn stamp(&self) -> Result<Option<FileStamp>, Error> {
        match fs::metadata(&self.path) {
            Ok(meta) => Ok(Some(FileStamp::of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::read(&self.path, e)),
        }
    }

    /// temp file (0600) → write → fsync → rename over the file → fsync the directory.
    fn replace_locked(&self, token: &Token) -> Result<FileStamp, Error> {
        let write_err = |e: io::Error| Error::write(&self.path, e);
        // tempfile creates the file with O_EXCL, mode 0600, and a random name, so two writers
        // never share a temp file.
        let mut temp = tempfile::Builder::new()
            .prefix(&self.temp_prefix)
            .suffix(TEMP_SUFFIX)
            .rand_bytes(TEMP_RANDOM_LEN)
            .tempfile_in(&self.dir)
            .map_err(write_err)?;
        let mut content = Vec::with_capacity(token.expose().len() + 1);
        content.extend_from_slice(token.expose().as_bytes());
        content.push(b'\n');
        temp.write_all(&content).map_err(write_err)?;
        temp.as_file().sync_all().map_err(write_err)?;
        let file = temp.persist(&self.path).map_err(|e| write_err(e.error))?;
        let meta = file.metadata().map_err(write_err)?;
        self.sync_dir()?;
        Ok(FileStamp::of(&meta))
    }

    fn sync_dir(&self) -> Result<(), Error> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::write(&self.dir, e))
    }
}
