//! [`Session`]: the current token, shared by the layer and the application, kept in step with
//! the session file.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::failures::{Rfc6750, SessionFailures};
use crate::file::{DEFAULT_REFRESH_LOCK_WAIT, TokenFile};
use crate::saved::Saved;
use crate::store::{Stored, Swap, TokenStore};
use crate::token::Token;

mod blocking;
mod builder;
mod calls;
mod check;
mod writer;

use blocking::{run_blocking, spawn_blocking_anywhere};
pub use builder::SessionBuilder;
pub use calls::Epoch;
use check::{monotonic_nanos, nanos};
use writer::release_waiters;

/// How often a session looks at the session file for a token written by another process.
///
/// One `stat` per interval, made by the first call after it, costs nothing a user can see; a
/// second is shorter than a person takes to switch terminals after an unlock.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A client's session: the current token, in memory and in a [`TokenStore`] (by default the
/// session file, [`TokenFile`]).
///
/// A cheap `Clone` handle: clones share one state. The layer reads the token on every call
/// without a lock or a syscall; refreshed tokens that come back on responses are written to the
/// file (see [`SessionBuilder::write_behind`]); a token another process writes to the file is
/// picked up by the first call after [`DEFAULT_CHECK_INTERVAL`].
///
/// ```no_run
/// use agent_session::{Session, Token};
///
/// # async fn run() -> Result<(), agent_session::Error> {
/// let session = Session::in_dir("/home/me/.agent");
/// session.start().await?; // the token on disk, if any
/// // … after an unlock:
/// session.start_with_token(Token::new("eyJ…")?).await?;
/// # Ok(()) }
/// ```
pub struct Session<St: TokenStore = TokenFile> {
    shared: Arc<Shared<St>>,
}

impl<St: TokenStore> Clone for Session<St> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// Counters of what a session did with refreshed tokens, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Refreshed tokens accepted from responses.
    pub refreshes: u64,
    /// Refresh writes made to the session file (one may cover many refreshes).
    pub writes: u64,
    /// Refreshes not written because the token on disk lives as long (JWT `exp`).
    pub skipped_writes: u64,
    /// Refresh writes that found another token (or none) in the file and adopted it.
    pub lost_refreshes: u64,
    /// Tokens written or removed by another process and picked up by this one.
    pub external_changes: u64,
    /// Refresh writes that gave up because another process held the session file's lock
    /// longer than [`TokenFile::refresh_lock_wait`]; the refresh stayed in memory.
    pub lock_timeouts: u64,
}

struct Shared<St: TokenStore> {
    store: St,
    /// What a call reads: the token and the epoch it belongs to.
    current: ArcSwap<Current>,
    /// Everything else, changed rarely and never held across I/O.
    state: Mutex<State<St::Version>>,
    /// Held (on a blocking thread) around every write, removal and adoption of the file: "what
    /// the file should hold → the file operation → what the state says it holds" is one step, so
    /// this process's own writes are never mistaken for another's, and explicit changes reach
    /// the disk in the order of their epochs. Taken before `state`, never inside it.
    gate: Mutex<()>,
    check_interval: Duration,
    /// When (on [`monotonic_nanos`]'s clock) the next look at the file is due.
    next_check: AtomicU64,
    checking: AtomicBool,
    write_behind: bool,
    always_write: bool,
    failures: Arc<dyn SessionFailures>,
    start_on_password: bool,
    /// The longest a call waits for the write of the token its response brought.
    call_wait: Duration,
    /// Writes of tokens that password calls brought, still under way: [`Session::flush`] waits
    /// for them too.
    password_writes: tokio::sync::watch::Sender<usize>,
    stats: Counters,
}

/// The token calls use, and the epoch it belongs to.
///
/// The epoch changes on every explicit change (start, unlock, clear, a token adopted from the
/// file), so a refresh that answers a call sent before the change is recognised and dropped.
pub(crate) struct Current {
    pub(crate) token: Option<Token>,
    pub(crate) epoch: u64,
}

struct State<V> {
    epoch: u64,
    /// What the file held when this process last read or wrote it: the refresh
    /// compare-and-swap expects to find it there.
    synced: Option<Token>,
    stamp: Option<V>,
    /// The newest refresh waiting for the writer, if any.
    pending: Option<Token>,
    /// The refresh the writer is writing now, and its sequence number.
    writing: Option<(Token, u64)>,
    /// Sequence numbers of refreshes handed to the writer, and of those it has finished.
    submitted: u64,
    finished: u64,
    writer_running: bool,
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    last_write_error: Option<Error>,
}

#[derive(Default)]
struct Counters {
    refreshes: AtomicU64,
    writes: AtomicU64,
    skipped_writes: AtomicU64,
    lost_refreshes: AtomicU64,
    external_changes: AtomicU64,
    lock_timeouts: AtomicU64,
}

/// What became of a refreshed token.
pub(crate) enum Refresh {
    /// Nothing to wait for: stale, unchanged, skipped, or written behind.
    Done,
    /// Resolves once a write covering the token is finished, or its bound has passed.
    Saving(Saved),
}

impl Session {
    /// A session kept in the file at `path`.
    #[must_use]
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self::builder(path).build()
    }

    /// A session kept in the file `token` of the client directory `dir`.
    #[must_use]
    pub fn in_dir(dir: impl AsRef<std::path::Path>) -> Self {
        SessionBuilder::with_store(TokenFile::in_dir(dir)).build()
    }

    /// Options for a session kept in the file at `path`.
    #[must_use]
    pub fn builder(path: impl Into<std::path::PathBuf>) -> SessionBuilder {
        SessionBuilder::with_store(TokenFile::new(path))
    }

    /// The session file's path.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        self.shared.store.path()
    }

    /// The session file.
    pub fn file(&self) -> &TokenFile {
        &self.shared.store
    }
}

impl<St: TokenStore> Session<St> {
    /// Options for a session kept in `store`.
    #[must_use]
    pub fn builder_with_store(store: St) -> SessionBuilder<St> {
        SessionBuilder::with_store(store)
    }

    /// A session kept in `store` (see [`TokenStore`]; [`Session::new`] keeps it in a file).
    #[must_use]
    pub fn with_store(store: St) -> Self {
        SessionBuilder::with_store(store).build()
    }

    /// The store the token is kept in.
    pub fn store(&self) -> &St {
        &self.shared.store
    }

    /// A [`SessionLayer`](crate::SessionLayer) keeping this session.
    #[must_use]
    pub fn layer(&self) -> crate::SessionLayer<crate::NoReauth, St> {
        crate::SessionLayer::new(self.clone())
    }

    /// Reads the token from the session file, if there is one, and uses it from now on.
    ///
    /// A missing or blank file leaves the session without a token; a bad file is an error and
    /// leaves the session as it was. Temp files left by writers that died mid-write are removed.
    ///
    /// # Errors
    ///
    /// [`Error::ReadFile`] when the file cannot be read, [`Error::CorruptFile`] when it holds
    /// no token (the session goes on without one: an unlock writes over the file).
    pub async fn start(&self) -> Result<(), Error> {
        let token_found = self
            .explicit(|shared| {
                shared.store.tidy();
                let snapshot = shared.store.load()?;
                let found = snapshot.token.is_some();
                shared.adopt(&mut shared.lock(), snapshot);
                Ok(found)
            })
            .await?;
        tracing::debug!(token_found, "session started");
        Ok(())
    }

    /// Uses `token` from now on and writes it to the session file, replacing whatever is there
    /// (an *explicit* write, as after an unlock).
    ///
    /// The token is in use even if the write fails, so a process that cannot write its session
    /// file can still work; the error says the next process will not see it.
    ///
    /// # Errors
    ///
    /// The store's error: [`Error::Locked`] when another process held the session file's lock
    /// longer than [`TokenFile::lock_wait`], [`Error::WriteFile`] when the file could not be
    /// written.
    pub async fn start_with_token(&self, token: Token) -> Result<(), Error> {
        self.explicit(move |shared| shared.start_blocking(token))
            .await
    }

    /// Forgets the token and removes the session file (what `agent lock` does). The token is
    /// forgotten even if the file cannot be removed.
    ///
    /// # Errors
    ///
    /// The store's error: [`Error::Locked`] when another process held the session file's lock
    /// longer than [`TokenFile::lock_wait`], [`Error::WriteFile`] when the file could not be
    /// removed. The file then still holds its token.
    pub async fn clear(&self) -> Result<(), Error> {
        self.explicit(|shared| {
            shared.begin_epoch(&mut shared.lock(), None);
            let result = shared.store.clear();
            shared.record_write(None, None);
            result?;
            tracing::debug!("session cleared");
            Ok(())
        })
        .await
    }

    /// Runs an explicit change on a blocking thread, inside the gate, then schedules the next
    /// look at the file one interval after this sync.
    async fn explicit<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Shared<St>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let shared = self.shared.clone();
        run_blocking(move || {
            let _gate = shared.gate();
            let result = change(&shared);
            shared.schedule_next_check();
            result
        })
        .await?
    }

    /// What this session did with refreshed tokens so far.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        let c = &self.shared.stats;
        SessionStats {
            refreshes: c.refreshes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            skipped_writes: c.skipped_writes.load(Ordering::Relaxed),
            lost_refreshes: c.lost_refreshes.load(Ordering::Relaxed),
            external_changes: c.external_changes.load(Ordering::Relaxed),
            lock_timeouts: c.lock_timeouts.load(Ordering::Relaxed),
        }
    }

    /// How the agent says a call failed for its session.
    pub(crate) fn failures(&self) -> &dyn SessionFailures {
        &*self.shared.failures
    }

    /// Whether a password call's token starts the session.
    pub(crate) fn starts_on_password(&self) -> bool {
        self.shared.start_on_password
    }

    /// The epoch of the token in use.
    pub(crate) fn epoch_now(&self) -> u64 {
        self.shared.current.load().epoch
    }

    /// The token and epoch for one call.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Current>> {
        self.shared.current.load()
    }
}

impl<St: TokenStore> Shared<St> {
    fn gate(&self) -> MutexGuard<'_, ()> {
        // The gate guards no data, so a panic while holding it leaves nothing half-made.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, State<St::Version>> {
        // A panic while holding this lock leaves no half-made state (every field is assigned
        // whole), so a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new epoch with `token` (an explicit change): refreshes of calls sent before are
    /// dropped, and a refresh waiting to be written is superseded.
    fn begin_epoch(&self, state: &mut State<St::Version>, token: Option<Token>) -> u64 {
        state.epoch += 1;
        state.pending = None;
        self.current.store(Arc::new(Current {
            token,
            epoch: state.epoch,
        }));
        state.finished = state.submitted;
        state.last_write_error = None;
        release_waiters(state);
        state.epoch
    }

    /// Takes what the file holds as the session's state, in a new epoch.
    fn adopt(&self, state: &mut State<St::Version>, stored: Stored<St::Version>) {
        self.begin_epoch(state, stored.token.clone());
        state.synced = stored.token;
        state.stamp = stored.version;
    }

    /// The explicit write of `token`, inside the gate: in use at once, then written.
    fn start_blocking(&self, token: Token) -> Result<(), Error> {
        let started = Instant::now();
        self.begin_epoch(&mut self.lock(), Some(token.clone()));
        let result = self.store.store(&token);
        self.record_write(result.as_ref().ok().copied(), Some(&token));
        result?;
        tracing::debug!(elapsed = ?started.elapsed(), "session token written");
        Ok(())
    }

    /// Records what an explicit write or removal left in the store: `written` is the version
    /// it reported; when it failed, the store is read again, since a write that fails after its
    /// rename (an `fsync` of the directory) has changed the file all the same. Whatever it
    /// finds is this process's doing (the gate is held), never another process's change.
    fn record_write(&self, written: Option<St::Version>, token: Option<&Token>) {
        let stored = match written {
            Some(version) => Stored {
                token: token.cloned(),
                version: Some(version),
            },
            None => match self.store.load() {
                Ok(stored) if stored.token.as_ref() == token => stored,
                // The write did not happen, or the store cannot be read: what the state says
                // it holds stays, and the next look at the file sorts it out.
                _ => return,
            },
        };
        let mut state = self.lock();
        state.synced = stored.token;
        state.stamp = stored.version;
    }
}

impl<St: TokenStore> std::fmt::Debug for Session<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("Session")
            .field("store", &std::any::type_name::<St>())
            .field("has_token", &current.token.is_some())
            .field("epoch", &current.epoch)
            .finish_non_exhaustive()
    }
}
