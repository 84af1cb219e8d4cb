//! [`KeyringStore`]: the session token in the OS credential store, shared by processes as the
//! session file is. The keyring holds the token; a companion [`TokenFile`] in a directory of
//! the user's holds a version counter, nothing secret, and lends the file's locks and watch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyring_core::Entry;

use crate::error::Error;
use crate::file::{ReauthLock, TokenFile};
use crate::store::{Stored, Swap, TokenStore, Version};
use crate::token::Token;

mod backend;
mod bounded;

pub use backend::KeyringBackend;
use bounded::{Bounded, NoAnswer};

/// A [`TokenStore`] whose token lives in the OS credential store (feature `keyring`): the
/// Keychain, the Credential Manager, the Secret Service or the kernel keyring
/// ([`KeyringBackend`]), one entry a session, named by a service and an account.
///
/// ```no_run
/// use tower_agent_session::{KeyringBackend, KeyringStore, Session};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_agent_session::Error> {
/// let store = KeyringStore::new(
///     KeyringBackend::native(),
///     "agent at [::1]:1315", // the service: which agent
///     "alice",               // the account: which user
///     "/run/user/1000/agent-session", // the companion files: nothing secret
/// );
/// let session = Session::new(store);
/// println!("{:?}", session.token()); // the token in memory, none until started
/// # Ok(()) }
/// ```
///
/// A keyring alone has no compare-and-swap and tells no one of a change. The store gets both
/// from a companion [`TokenFile`] (`<dir>/version`, with its `.lock` and `.reauth.lock`) that
/// holds a counter, never the token, so that a refresh is a compare-and-swap, an explicit write
/// replaces, other processes' changes are seen within the watch's delay, and one process
/// re-authenticates for all: the same guarantees as the session file's, by the same locks.
///
/// # The keyring protocol
///
/// What every process sharing the entry does, this crate's and any other implementation's:
///
/// - **Where.** The token is the secret of the keyring entry (`service`, `account`), as UTF-8,
///   nothing else. The companion is the session file `<dir>/version` under
///   [`TokenFile`]'s protocol (directory 0700, files 0600, the writers' lock
///   `<dir>/version.lock`, the re-authentication lock `<dir>/version.reauth.lock`), holding a
///   decimal counter where a session file holds a token.
/// - **No companion file, no token.** A reader reads the companion's version first, then the
///   entry: no file means no token, whatever the entry holds; no entry means no token too.
/// - **Writers take the companion's lock**, and under it: an explicit write sets the entry,
///   then replaces the companion with the counter plus one; a refresh reads the entry, and
///   only if it holds the token expected does the same; a removal removes the companion, then
///   deletes the entry. The entry is written before the companion, so whoever sees a new
///   version reads a token at least as new; a crash between the two leaves the entry's new
///   token under the old version, which the next write or read of the entry finds.
/// - **Bounded.** Every keyring call runs on the store's own thread and is waited for at most
///   [`bound`](Self::bound) (default [`DEFAULT_BOUND`](Self::DEFAULT_BOUND)): past it the
///   caller gets [`Error::KeyringTimedOut`] and the session keeps the token it has in memory;
///   while that call still hangs, this store's calls made after it are refused at once the
///   same way, and a hung write keeps the companion's lock, so other processes' writes fail
///   with [`Error::Locked`] after their own wait. A call given up on before it ran never runs.
///   A keyring that cannot be reached at all is [`Error::KeyringUnavailable`], naming the
///   backend and what to do; the store never falls back to a file.
#[derive(Debug, Clone)]
pub struct KeyringStore {
    backend: KeyringBackend,
    service: String,
    account: String,
    companion: TokenFile,
    bound: Duration,
    /// The keyring's thread and what it keeps, shared by clones; new when a setting changes.
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    thread: Bounded,
    /// The entry, made on the keyring's thread at its first use, and again after a failure.
    entry: Mutex<Option<Entry>>,
    /// The companion's version at which a read found no entry: the store holds no token at
    /// that version, so [`TokenStore::version`] says none, as the read did (else the watch
    /// would read the keyring at every look until the next write).
    missing_at: Mutex<Option<Version>>,
}

impl KeyringStore {
    /// How long a keyring call is waited for by default: long enough for a person to answer a
    /// prompt to unlock the keyring, as long as an explicit write waits for another process's
    /// lock ([`TokenFile::DEFAULT_LOCK_WAIT`]).
    pub const DEFAULT_BOUND: Duration = Duration::from_secs(10);

    /// The name of the companion file in its directory.
    pub const COMPANION: &str = "version";

    /// The entry (`service`, `account`) of `backend`, with its companion files in `dir`.
    /// Nothing is read or connected to until the session first reads the store.
    #[must_use]
    pub fn new(
        backend: KeyringBackend,
        service: impl Into<String>,
        account: impl Into<String>,
        dir: impl AsRef<Path>,
    ) -> Self {
        Self {
            backend,
            service: service.into(),
            account: account.into(),
            companion: TokenFile::new(dir.as_ref().join(Self::COMPANION)),
            bound: Self::DEFAULT_BOUND,
            state: Arc::default(),
        }
    }

    /// The entry of the session directory `dir` under `service`, with its companion files
    /// there: the account is `dir`'s canonical path (links, `..` and trailing separators
    /// resolved, as `realpath` gives it; on Windows without the `\\?\` prefix wherever the
    /// plain form names the same, as `dunce::canonicalize` gives it), so that processes that
    /// name one directory in different ways share one entry, as they share its companion.
    /// Creates `dir` (mode 0700 on Unix) if it is missing; nothing is read from the keyring.
    ///
    /// ```no_run
    /// use tower_agent_session::{KeyringBackend, KeyringStore};
    ///
    /// let store = KeyringStore::in_dir(
    ///     KeyringBackend::native(),
    ///     "my-agent",
    ///     "/run/user/1000/my-agent/../my-agent/",
    /// )?;
    /// assert_eq!(store.account(), "/run/user/1000/my-agent");
    /// # Ok::<(), tower_agent_session::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::WriteFile`] when the directory cannot be created; [`Error::Store`] when its
    /// path cannot be resolved, or is not UTF-8 (an account is text: two such paths could
    /// not be told apart).
    pub fn in_dir(
        backend: KeyringBackend,
        service: impl Into<String>,
        dir: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let dir = dir.as_ref();
        crate::file::create_private_dir(dir)?;
        let unnamed = |why: String| {
            let why = format!("cannot name a keyring entry by {}: {why}", dir.display());
            Error::Store(Arc::new(std::io::Error::other(why)))
        };
        let dir = dunce::canonicalize(dir).map_err(|e| unnamed(e.to_string()))?;
        let account = dir.to_str().ok_or_else(|| unnamed("not UTF-8".into()))?;
        Ok(Self::new(backend, service, account.to_owned(), &dir))
    }

    /// How long a keyring call is waited for ([`DEFAULT_BOUND`](Self::DEFAULT_BOUND)). The
    /// store it returns has a keyring thread of its own: set the bound before cloning it.
    #[must_use]
    pub fn bound(self, bound: Duration) -> Self {
        let state = Arc::default();
        Self {
            bound,
            state,
            ..self
        }
    }

    /// The companion [`TokenFile`]'s waits (a store with a keyring thread of its own, as
    /// [`bound`](Self::bound)'s): its lock's ([`TokenFile::lock_wait`],
    /// [`TokenFile::refresh_lock_wait`]) and another process's re-authentication's
    /// ([`TokenFile::reauth_wait`]).
    #[must_use]
    pub fn companion_waits(self, waits: impl FnOnce(TokenFile) -> TokenFile) -> Self {
        let (companion, state) = (waits(self.companion.clone()), Arc::default());
        Self {
            companion,
            state,
            ..self
        }
    }

    /// Its backend.
    pub fn backend(&self) -> KeyringBackend {
        self.backend
    }

    /// The entry's account.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The entry's service.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The companion file, `<dir>/version`.
    pub fn companion(&self) -> &Path {
        self.companion.path()
    }

    /// Runs `op` on the keyring's thread, under the companion's writers' lock if `lock_wait`
    /// says how long to wait for it (a write's); waited for at most the bound plus that wait.
    fn on_thread<T: Send + 'static>(
        &self,
        lock_wait: Option<Duration>,
        op: impl FnOnce(&Self) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let this = self.clone();
        let waited = self.bound + lock_wait.unwrap_or_default();
        let answer = self.state.thread.run(waited, move || {
            let _lock = lock_wait
                .map(|wait| this.companion.lock(wait))
                .transpose()?;
            op(&this)
        });
        match answer {
            Ok(result) => result,
            Err(NoAnswer::TimedOut(waited)) => Err(Error::KeyringTimedOut {
                backend: self.backend,
                waited,
            }),
            Err(NoAnswer::Lost(why)) => Err(Error::Store(Arc::new(std::io::Error::other(why)))),
        }
    }

    /// `call` on the entry, made first if need be; after a failure the entry is made again by
    /// the next call (a daemon that went away may be back).
    fn with_entry<T>(&self, call: impl FnOnce(&Entry) -> Result<T, Error>) -> Result<T, Error> {
        let mut slot = lock(&self.state.entry);
        let entry = match slot.take() {
            Some(entry) => entry,
            None => self.backend.entry(&self.service, &self.account)?,
        };
        let result = call(&entry);
        if !matches!(result, Err(Error::KeyringUnavailable { .. })) {
            *slot = Some(entry);
        }
        result
    }

    /// The version, then the token: whoever sees a version reads a token at least as new. No
    /// entry under a companion (deleted by hand, a keyring reset) is no token, as after a
    /// clear: never a file being written, whose token a session keeps.
    fn read(&self) -> Result<Stored, Error> {
        let Some(version) = self.companion.version()? else {
            return Ok(Stored {
                token: None,
                version: None,
            });
        };
        let token = self.with_entry(|entry| self.backend.get(entry))?;
        *lock(&self.state.missing_at) = token.is_none().then_some(version);
        let version = token.is_some().then_some(version);
        Ok(Stored { token, version })
    }

    /// Sets the entry, then the companion's counter one up; under the companion's lock.
    fn write(&self, token: &Token, wait: Duration) -> Result<Version, Error> {
        self.with_entry(|entry| self.backend.set(entry, token))?;
        // A companion unreadable, or holding no counter, counts from 0.
        let counter = self
            .companion
            .read_snapshot()
            .ok()
            .and_then(|stored| stored.token?.expose().parse::<u64>().ok())
            .unwrap_or(0);
        let next = Token::new(counter.wrapping_add(1).to_string())?;
        self.companion.replace_locked(&next, wait)
    }
}

impl TokenStore for KeyringStore {
    fn load(&self) -> Result<Stored, Error> {
        self.on_thread(None, Self::read)
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        let (token, wait) = (token.clone(), self.companion.lock_wait);
        self.on_thread(Some(wait), move |this| this.write(&token, wait))
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        let (expected, new) = (expected.cloned(), new.clone());
        let wait = self.companion.refresh_lock_wait;
        self.on_thread(Some(wait), move |this| {
            let current = this.read()?;
            if current.token != expected {
                return Ok(Swap::Lost(current));
            }
            this.write(&new, wait).map(Swap::Replaced)
        })
    }

    fn clear(&self) -> Result<(), Error> {
        // The removal waits for a reader in its way as long as for the lock: `lock_wait`.
        self.on_thread(Some(self.companion.lock_wait), |this| {
            this.companion.remove_locked()?;
            this.with_entry(|entry| this.backend.delete(entry))
        })
    }

    /// The companion's version, or none at the version at which the entry was found missing.
    fn version(&self) -> Result<Option<Version>, Error> {
        let version = self.companion.version()?;
        Ok(version.filter(|v| *lock(&self.state.missing_at) != Some(*v)))
    }

    fn tidy(&self) {
        self.companion.tidy();
    }

    fn watched_file(&self) -> Option<PathBuf> {
        self.companion.watched_file()
    }

    fn reauth_lock(&self) -> Option<ReauthLock> {
        self.companion.reauth_lock()
    }
}

/// Its value, whoever panicked holding it: every value here and in [`bounded`] is assigned
/// whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
