//! [`TokenFile`]: the session file, shared by every process of a user. Its protocol, which
//! every process (and every other implementation) follows, is in [`TokenFile`]'s docs.
//!
//! Every method here is blocking; [`Session`](crate::Session) runs them off the async workers.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(doc)]
use crate::{error::Error, store::TokenStore};

/// The session file and its lock file: where a [`Session`](crate::Session) keeps its token by
/// default, shared by every process of the user.
///
/// Every method is blocking (it may wait for the lock and for the disk); a session runs them
/// off the async workers.
///
/// Its reads and writes are [`TokenStore`]'s, the one API of every store:
///
/// ```
/// use tower_agent_session::store::{Swap, TokenStore as _};
/// use tower_agent_session::{Token, TokenFile};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let file = TokenFile::in_dir(dir.path().join("client")); // …/client/token
/// assert_eq!(file.load()?.token, None); // no file: no token
///
/// file.store(&Token::new("t1")?)?; // explicit: replaces whatever is there
/// assert_eq!(std::fs::read_to_string(file.path())?, "t1\n");
///
/// // A refresh replaces only the token it expects: here another process's unlock won.
/// let (t0, t1, t2) = (Token::new("t0")?, Token::new("t1")?, Token::new("t2")?);
/// assert!(matches!(file.swap(Some(&t0), &t2)?, Swap::Lost(_)));
/// assert!(matches!(file.swap(Some(&t1), &t2)?, Swap::Replaced(_)));
/// assert_eq!(file.load()?.token, Some(t2));
///
/// file.clear()?; // a lock
/// assert_eq!(file.load()?.token, None);
/// # Ok(()) }
/// ```
///
/// # The file protocol
///
/// What every process sharing the file does, this crate's and any other implementation's:
///
/// - **Where.** The file is `<dir>/token` ([`TokenFile::in_dir`], [`TokenFile::NAME`](crate::TokenFile::NAME)) or any
///   path ([`TokenFile::new`]). A missing directory is created, with its parents, before the
///   first write or removal, and when a session starts watching the file.
/// - **Only its user can read it.** On Unix the directories created have mode 0700 and every
///   file in them mode 0600. On Windows each directory created gets a protected DACL with one
///   entry, full control for the current user, inherited by the files made inside; each temp
///   file gets the same (not inherited) before the token is written, so the session file is
///   owner-only in a directory of the user's choosing too. A directory that was there already
///   keeps its mode or DACL.
/// - **What.** The token and a newline. A reader trims white space around it; a missing, empty
///   or blank file means "no token". A file larger than [`TokenFile::MAX_LEN`](crate::TokenFile::MAX_LEN) (a token of
///   [`Token::MAX_LEN`](crate::Token::MAX_LEN) and 1 KiB of white space) is refused unread; one
///   that is not a regular file (a FIFO is opened without waiting for a writer), not UTF-8, or
///   not a bearer token is [`Error::CorruptFile`]. No error shows the content. (A running
///   session that sees the file turn blank keeps its token until the write lands: a shell's
///   `echo … > token` truncates the file before it writes.)
/// - **Writers take the lock.** Every write and removal holds an exclusive lock (`flock`; on
///   Windows `LockFileEx`, both what std's `File::lock` takes) on the lock file, `<name>.lock` beside the file ([`TokenFile::lock_path`]; mode 0600, never renamed,
///   never removed: a lock on the session file itself would be lost with the rename). Nothing
///   is written or removed without it.
/// - **Nobody waits forever.** A holder may be stopped (Ctrl-Z) or stuck on a hung filesystem:
///   a refresh write gives up after [`TokenFile::refresh_lock_wait`]
///   ([`TokenFile::DEFAULT_REFRESH_LOCK_WAIT`](crate::TokenFile::DEFAULT_REFRESH_LOCK_WAIT), the refresh stays in memory), an explicit write or removal
///   after [`TokenFile::lock_wait`] ([`TokenFile::DEFAULT_LOCK_WAIT`](crate::TokenFile::DEFAULT_LOCK_WAIT)), with [`Error::Locked`] naming the
///   lock file (or, on Windows, the session file, see below); a recovery waits for another process's re-authentication at most
///   [`TokenFile::reauth_wait`] ([`TokenFile::DEFAULT_REAUTH_WAIT`]). Every wait is set here,
///   on the file.
/// - **Re-authenticators take the re-authentication lock.** A process about to re-authenticate
///   (its calls refused for their session) takes an exclusive lock on
///   `<name>.reauth.lock` beside the file (never removed) and writes its pid into
///   `<name>.reauth.pid` for the messages of those who wait (not into the lock file: Windows'
///   locks are mandatory, and would hide it from them). Under it, it reads the file again and
///   re-authenticates only if the file still holds the refused token, or none; it lets go once
///   the new token is written. The others wait for that token or for the lock. **Lock order:**
///   this lock first, the writers' lock inside it, never the other way round.
/// - **A write replaces the file whole.** Under the lock: a temp file in the same directory
///   (`.<name>.<8 random characters>.tmp`, created exclusively with mode 0600), the token and a
///   newline written to it, `fsync`, `rename` over the file, `fsync` of the directory (Windows
///   has none: NTFS journals the rename). A removal is `unlink`, then `fsync` of the directory.
/// - **On Windows, a reader can be in the way.** Windows refuses to rename over, or remove, a
///   file that another process has open without sharing its deletion (`type token`, an
///   editor, a virus scanner; Wine refuses it whatever the sharing): "Access is denied" or a
///   sharing violation. The writer tries again every millisecond, for as long as it
///   waits for the lock (a refresh 1 s, an explicit write or removal 10 s); past that it
///   ends as a lock's timeout does, with [`Error::Locked`] naming the session file and nothing
///   written. No caller ever sees "Access is denied" for a reader.
/// - **Readers take no lock.** The rename is atomic: a reader sees the old token or the new one,
///   never a mix, and never waits for a writer. It keeps the file open only for its one read,
///   and opens it sharing read, write and deletion.
/// - **Two kinds of write.** An *explicit* write ([`TokenStore::store`], after an unlock)
///   replaces whatever is there, a corrupt file included. A *refresh* write
///   ([`TokenStore::swap`]) reads the file under the lock and replaces it only if it still
///   holds the token the writer last read or wrote: a refresh never brings back a session
///   another process locked, nor overwrites a token another process unlocked.
/// - **A crash** at any point leaves the file whole: the old token, or the new one once the
///   rename is durable. It may leave a temp file, which the next explicit write removes (under
///   the lock no live writer has one), as does [`Session::start`](crate::Session::start) when
///   no one holds the lock. The lock is the kernel's and dies with its process (Windows
///   releases a killed process's locks as it ends it): a crash never leaves the file locked.
///
/// A running session learns of another process's change through its
/// [`Watch`](crate::Watch); which refreshes it writes, and when, is
/// [`AgentTokens`](crate::AgentTokens)'s table.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
    lock_path: PathBuf,
    temp_prefix: String,
    /// Also what a session's [`call_wait`](crate::SessionBuilder::call_wait) is by default.
    pub(crate) refresh_lock_wait: Duration,
    /// How long an explicit write or a removal waits for the writers' lock.
    pub(crate) lock_wait: Duration,
    reauth_wait: Duration,
}

/// One version of the session file, as `stat` tells it (on Windows, the volume serial and file
/// index): a new write is a new file, so a change by any process shows here without reading
/// the file. Filled in by [`sys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl TokenFile {
    /// The name of the session file inside a client directory ([`TokenFile::in_dir`]).
    pub const NAME: &str = "token";

    /// The largest session file that is read: a token of [`Token::MAX_LEN`](crate::Token::MAX_LEN) plus 1 KiB of white
    /// space. Anything larger cannot hold a token, so it is refused without being read.
    pub const MAX_LEN: u64 = crate::Token::MAX_LEN as u64 + 1024;

    /// How long an explicit write or removal (an unlock, a lock) waits for another process's
    /// lock before it fails with [`Error::Locked`]: 10 s. Longer than a refresh's: the user
    /// asked for this change and it must not be lost to a slow disk, but a command that sits
    /// silent for more than ten seconds looks hung.
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(10);

    /// How long a refresh write waits for another process's lock before it gives up (the
    /// refresh stays in memory and is written with a later one): 1 s. A write holds the lock
    /// for a few milliseconds; a second means the holder is stuck (stopped, or on a hung
    /// filesystem), and a call must not wait on it longer than a person notices.
    pub const DEFAULT_REFRESH_LOCK_WAIT: Duration = Duration::from_secs(1);

    /// How long a session's recovery waits for another process that re-authenticates the same
    /// session file: 60 s. Long enough for a person to type a password at that process's
    /// prompt (or look it up), short enough that a process stopped there (Ctrl-Z) does not hold
    /// every other process for long. A holder that dies hands over at once.
    pub const DEFAULT_REAUTH_WAIT: Duration = Duration::from_secs(60);

    /// The session file at `path`; its lock file is `path` with `.lock` appended.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map_or(Self::NAME.into(), |n| n.to_string_lossy());
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        Self {
            lock_path: lock_path.into(),
            temp_prefix: format!(".{name}."),
            path,
            refresh_lock_wait: Self::DEFAULT_REFRESH_LOCK_WAIT,
            lock_wait: Self::DEFAULT_LOCK_WAIT,
            reauth_wait: Self::DEFAULT_REAUTH_WAIT,
        }
    }

    /// How long an explicit write or removal waits for another process's lock (default
    /// [`TokenFile::DEFAULT_LOCK_WAIT`](crate::TokenFile::DEFAULT_LOCK_WAIT)) before it fails with [`Error::Locked`].
    #[must_use]
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How long a refresh write ([`TokenStore::swap`]) waits for another process's lock
    /// (default [`TokenFile::DEFAULT_REFRESH_LOCK_WAIT`](crate::TokenFile::DEFAULT_REFRESH_LOCK_WAIT)) before it fails with [`Error::Locked`].
    #[must_use]
    pub fn refresh_lock_wait(mut self, wait: Duration) -> Self {
        self.refresh_lock_wait = wait;
        self
    }

    /// How long a session's recovery waits for another process that re-authenticates with this
    /// file (default [`TokenFile::DEFAULT_REAUTH_WAIT`]), holding its re-authentication lock
    /// (`<name>.reauth.lock`). Within the wait, the other process's token is used as soon as it
    /// is written; a holder that dies hands over at once; past the wait, the session
    /// re-authenticates itself. A call that waits can give up sooner (a timeout, a drop)
    /// without ending the recovery. [`Session::clear_after`](crate::Session::clear_after) waits
    /// as long for the lock.
    #[must_use]
    pub fn reauth_wait(mut self, wait: Duration) -> Self {
        self.reauth_wait = wait;
        self
    }

    /// The session file `token` inside the client directory `dir`.
    #[must_use]
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        Self::new(dir.as_ref().join(Self::NAME))
    }

    /// The session file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }
}

/// The directory `path` is in: its parent, or `.` for a bare name.
pub(crate) fn dir_of(path: &Path) -> &Path {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    parent.unwrap_or(Path::new("."))
}

const TEMP_SUFFIX: &str = ".tmp";
/// Random characters in a temp file's name: with the prefix and suffix, they tell this
/// library's temp files from anything else in the directory.
const TEMP_RANDOM_LEN: usize = 8;

mod lock;
mod reauth_lock;
mod store;
mod sys;

// The re-authentication lock, held, is a held `flock` as the writers' lock is.
pub(crate) use lock::{FileLock as ReauthLockGuard, Taken, create_private_dir};
pub use reauth_lock::ReauthLock;
pub(crate) use sys::identity;

#[cfg(test)]
mod tests;
