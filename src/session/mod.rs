//! [`Session`]: the current token, shared by the layer and the application, kept in step with
//! the session file.
//!
//! The flow of a token through this module: a call reads [`Current`] (one atomic load, nothing
//! else); a refreshed token goes to the [writer](writer) and from it to the store; a change
//! another process makes to the session file comes back through the [watch](watch).

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
use crate::store::{Stored, Swap, TokenStore, Version};
use crate::token::Token;

mod blocking;
mod builder;
mod calls;
mod policy;
mod watch;
mod writer;

use blocking::{run_blocking, spawn_blocking_anywhere};
pub use builder::SessionBuilder;
pub use calls::Epoch;
pub use policy::AgentTokens;
pub use watch::Watch;
use writer::release_waiters;

/// A client's session: the current token, in memory and in a [`TokenStore`] (the session
/// file, [`TokenFile`], or a store of your own).
///
/// A cheap `Clone` handle: clones share one state. The layer reads the token on every call
/// without a lock or a syscall; refreshed tokens that come back on responses are written to the
/// store as [`AgentTokens`] says; a token another process writes to the session file is picked
/// up as soon as the file changes (see [`Watch`]).
///
/// ```no_run
/// use agent_session::{Session, Token, TokenFile};
///
/// # async fn run() -> Result<(), agent_session::Error> {
/// let session = Session::new(TokenFile::in_dir("/home/me/.agent"));
/// session.start().await?; // the token on disk, if any
/// // … after an unlock:
/// session.start_with_token(Token::new("eyJ…")?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

/// Counters of what a session did with refreshed tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Refreshed tokens accepted from responses.
    pub refreshes: u64,
    /// Refresh writes made to the store (one may cover many refreshes).
    pub writes: u64,
    /// Refreshes not written because the token in the store lives as long (JWT `exp`).
    pub skipped_writes: u64,
    /// Refresh writes that found another token (or none) in the store and adopted it.
    pub lost_refreshes: u64,
    /// Tokens written or removed by another process and picked up by this one.
    pub external_changes: u64,
    /// Refresh writes that gave up because another process held the session file's lock
    /// longer than [`TokenFile::refresh_lock_wait`]; the refresh stayed in memory.
    pub lock_timeouts: u64,
}

struct Shared {
    store: Box<dyn TokenStore>,
    /// The store, when it is the session file: what the watch watches.
    file: Option<TokenFile>,
    /// What a call reads: the token and the epoch it belongs to. Shared with the services'
    /// [`CurrentCache`]s.
    current: Arc<ArcSwap<Current>>,
    /// Everything else, changed rarely and never held across I/O.
    state: Mutex<State>,
    /// Held (on a blocking thread) around every write, removal and adoption of the store, so
    /// that "what the store should hold → the store operation → what the state says it holds"
    /// is one step. See [`Shared::in_gate`].
    gate: Mutex<()>,
    agent_tokens: AgentTokens,
    watch: Watch,
    /// The watch on the session file once armed; dropped with the session.
    watcher: Mutex<Option<watch::Armed>>,
    /// Whether the watch's last look at the store failed, so that a failure repeated at every
    /// poll is warned of once.
    look_failing: AtomicBool,
    failures: Arc<dyn SessionFailures>,
    start_on_password: bool,
    /// The longest a call waits for the write of the token its response brought.
    call_wait: Duration,
    /// Writes of tokens that password calls brought, still under way: [`Session::flush`] waits
    /// for them too.
    password_writes: tokio::sync::watch::Sender<usize>,
    /// The epoch now, for [`Session::changed_since`].
    epochs: tokio::sync::watch::Sender<u64>,
    stats: Counters,
}

/// A service's cache of the session's [`Current`].
pub(crate) type CurrentCache = arc_swap::Cache<Arc<ArcSwap<Current>>, Arc<Current>>;

/// The token calls use, and the epoch it belongs to.
///
/// The epoch changes on every explicit change (start, unlock, clear, a token adopted from the
/// file), so a refresh that answers a call sent before the change is recognised and dropped.
pub(crate) struct Current {
    pub(crate) token: Option<Token>,
    pub(crate) epoch: u64,
}

struct State {
    epoch: u64,
    /// What the store held when this process last read or wrote it: the refresh
    /// compare-and-swap expects to find it there.
    synced: Option<Token>,
    version: Option<Version>,
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
    /// Reads of the store by the watch: not a figure for users, but what shows that the watch
    /// reads on changes and on nothing else.
    watch_reads: AtomicU64,
}

/// What became of a refreshed token.
pub(crate) enum Refresh {
    /// Nothing to wait for: stale, unchanged, skipped, or written behind.
    Done,
    /// Resolves once a write covering the token is finished, or its bound has passed.
    Saving(Saved),
}

impl Session {
    /// A session kept in `store` with the default options: the session file
    /// ([`TokenFile::in_dir`]) or a store of your own.
    #[must_use]
    pub fn new(store: impl TokenStore) -> Self {
        Self::builder(store).build()
    }

    /// Options for a session kept in `store`.
    pub fn builder(store: impl TokenStore) -> SessionBuilder {
        SessionBuilder::new(store)
    }

    /// The session file, when the store is one.
    #[must_use]
    pub fn file(&self) -> Option<&TokenFile> {
        self.shared.file.as_ref()
    }

    /// The store the token is kept in.
    #[must_use]
    pub fn store(&self) -> &dyn TokenStore {
        &*self.shared.store
    }

    /// Reads the token from the store, if there is one, uses it from now on, and starts
    /// watching the session file for other processes' changes (see [`Watch`]).
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
                let stored = shared.store.load()?;
                let found = stored.token.is_some();
                shared.adopt(&mut shared.lock(), stored);
                Ok(found)
            })
            .await?;
        tracing::debug!(token_found, "session started");
        Ok(())
    }

    /// Uses `token` from now on and writes it to the store, replacing whatever is there (an
    /// *explicit* write, as after an unlock).
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

    /// Forgets the token and removes it from the store (what `agent lock` does). The token is
    /// forgotten even if the store cannot be changed.
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

    /// Runs an explicit change on a blocking thread, inside the gate; arms the watch first.
    async fn explicit<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Shared) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let shared = self.shared.clone();
        run_blocking(move || {
            watch::arm(&shared);
            shared.in_gate(|| change(&shared))
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
    #[inline]
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

    /// A cache of [`Session::current`] for one service: reading it costs one atomic load while
    /// the session does not change (the hot path), where a plain read also takes a slot.
    pub(crate) fn current_cache(&self) -> CurrentCache {
        arc_swap::Cache::new(self.shared.current.clone())
    }
}

impl Shared {
    /// Runs `step` inside the gate. Every change of the store, and every change of the epoch,
    /// is made through here, so that a store operation and the state recording its outcome are
    /// one step: this process's own writes are never taken for another's, and explicit changes
    /// reach the store in the order of their epochs.
    fn in_gate<T>(&self, step: impl FnOnce() -> T) -> T {
        // The gate guards no data, so a panic while holding it leaves nothing half-made.
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        step()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves no half-made state (every field is assigned
        // whole), so a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new epoch with `token` (an explicit change): refreshes of calls sent before are
    /// dropped, and a refresh waiting to be written is superseded.
    fn begin_epoch(&self, state: &mut State, token: Option<Token>) -> u64 {
        state.epoch += 1;
        state.pending = None;
        self.current.store(Arc::new(Current {
            token,
            epoch: state.epoch,
        }));
        state.finished = state.submitted;
        state.last_write_error = None;
        release_waiters(state);
        self.epochs.send_replace(state.epoch);
        state.epoch
    }

    /// Takes what the store holds as the session's state, in a new epoch.
    fn adopt(&self, state: &mut State, stored: Stored) {
        self.begin_epoch(state, stored.token.clone());
        state.synced = stored.token;
        state.version = stored.version;
    }

    /// Whether what another process left in the store is a blank file, to be left alone: no
    /// writer of this library makes one (they rename a whole file into place, and a lock
    /// removes it), but a shell's `echo … > token` truncates before it writes. The session keeps
    /// its token until the write lands, and records the version seen.
    fn keep_while_blank(&self, state: &mut State, stored: &Stored) -> bool {
        if stored.token.is_some() || stored.version.is_none() {
            return false;
        }
        tracing::debug!("the session file is blank for now; keeping the token");
        state.version = stored.version;
        true
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
    fn record_write(&self, written: Option<Version>, token: Option<&Token>) {
        let stored = match written {
            Some(version) => Stored {
                token: token.cloned(),
                version: Some(version),
            },
            None => match self.store.load() {
                Ok(stored) if stored.token.as_ref() == token => stored,
                // The write did not happen (another process's token stays there, and wins), or
                // the store cannot be read: what the state says it holds stays, and the next
                // change of the file sorts it out.
                _ => return,
            },
        };
        let mut state = self.lock();
        state.synced = stored.token;
        state.version = stored.version;
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("Session")
            .field("file", &self.file().map(TokenFile::path))
            .field("has_token", &current.token.is_some())
            .field("epoch", &current.epoch)
            .finish_non_exhaustive()
    }
}
