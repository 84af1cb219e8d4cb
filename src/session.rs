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

/// Options for a [`Session`].
#[derive(Debug, Clone)]
pub struct SessionBuilder<St = TokenFile> {
    store: St,
    check_interval: Duration,
    write_behind: bool,
    always_write: bool,
    failures: Arc<dyn SessionFailures>,
    start_on_password: bool,
    call_wait: Duration,
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

/// The session as a call found it when it was sent, for [`Session::refresh`]: a refreshed
/// token that answers a call sent before an explicit change (an unlock, a lock, another
/// process's token picked up) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    epoch: u64,
    had_token: bool,
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

impl<St: TokenStore> SessionBuilder<St> {
    /// Checks the file for changes made by other processes at most this often (default
    /// [`DEFAULT_CHECK_INTERVAL`]). `Duration::ZERO` checks before every call.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Whether a call with a refreshed token completes before the token is on disk.
    ///
    /// Off by default: a response is handed over only once its token (or a fresher one) is
    /// durable, and concurrent refreshes share one write. On, the write happens in the
    /// background and [`Session::flush`] waits for it; a crash before then loses the refresh
    /// and the next process starts from the previous token, which the agent still accepts until
    /// it expires, so the risk is a re-authentication, never a torn file.
    pub fn write_behind(mut self, on: bool) -> Self {
        self.write_behind = on;
        self
    }

    /// Whether to write every refreshed token, even a JWT that expires no later than the one on
    /// disk.
    ///
    /// Off by default: such a write buys nothing (the file's token lives as long) and a durable
    /// write costs several times a loopback call. Turn it on where each process makes a call or
    /// two and the file should always hold the newest token, as in a command-line tool.
    pub fn always_write(mut self, on: bool) -> Self {
        self.always_write = on;
        self
    }

    /// How the agent says a call failed for its session (default [`Rfc6750`]; a Polykey agent
    /// is [`Polykey`](crate::Polykey)): what re-authentication recovers from.
    #[must_use]
    pub fn failures(mut self, failures: impl SessionFailures) -> Self {
        self.failures = Arc::new(failures);
        self
    }

    /// Whether a token on the response to a call made with a password (`authorization: Basic
    /// …`) starts the session, as an explicit write, the way an unlock does. Off by default.
    ///
    /// On for agents, like Polykey's, whose every call accepts the password and answers it with
    /// a session token: a call made with the password is an unlock. The call completes once
    /// the token is written (or the write failed, with a warning).
    #[must_use]
    pub fn start_on_password(mut self, on: bool) -> Self {
        self.start_on_password = on;
        self
    }

    /// Makes the session. It holds no token until [`Session::start`] or
    /// [`Session::start_with_token`].
    pub fn build(self) -> Session<St> {
        Session {
            shared: Arc::new(Shared {
                store: self.store,
                current: ArcSwap::from_pointee(Current {
                    token: None,
                    epoch: 0,
                }),
                state: Mutex::new(State {
                    epoch: 0,
                    synced: None,
                    stamp: None,
                    pending: None,
                    writing: None,
                    submitted: 0,
                    finished: 0,
                    writer_running: false,
                    waiters: Vec::new(),
                    last_write_error: None,
                }),
                gate: Mutex::new(()),
                check_interval: self.check_interval,
                next_check: AtomicU64::new(
                    monotonic_nanos().saturating_add(nanos(self.check_interval)),
                ),
                checking: AtomicBool::new(false),
                write_behind: self.write_behind,
                always_write: self.always_write,
                failures: self.failures,
                start_on_password: self.start_on_password,
                call_wait: self.call_wait,
                password_writes: tokio::sync::watch::Sender::new(0),
                stats: Counters::default(),
            }),
        }
    }
}

impl Session {
    /// A session kept in the file at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self::builder(path).build()
    }

    /// A session kept in the file `token` of the client directory `dir`.
    pub fn in_dir(dir: impl AsRef<std::path::Path>) -> Self {
        SessionBuilder::with_store(TokenFile::in_dir(dir)).build()
    }

    /// Options for a session kept in the file at `path`.
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

impl SessionBuilder {
    /// How long writes wait for another process's lock on the session file: a refresh write
    /// (default [`DEFAULT_REFRESH_LOCK_WAIT`](crate::DEFAULT_REFRESH_LOCK_WAIT)) and an
    /// explicit write or removal (default [`DEFAULT_LOCK_WAIT`](crate::DEFAULT_LOCK_WAIT)).
    ///
    /// A refresh that gives up stays in memory, is written with a later refresh, and is
    /// counted in [`SessionStats::lock_timeouts`]. A call never waits for the write of the token
    /// its response brought (a refresh, or a password call's) longer than `refresh`, counted
    /// from its response: it is then answered as the agent answered it, and the write goes on.
    /// An explicit change that gives up fails with [`Error::Locked`].
    #[must_use]
    pub fn lock_wait(mut self, refresh: Duration, explicit: Duration) -> Self {
        self.store = self.store.refresh_lock_wait(refresh).lock_wait(explicit);
        self.call_wait = refresh;
        self
    }
}

impl<St: TokenStore> SessionBuilder<St> {
    /// Options for a session kept in `store`.
    pub fn with_store(store: St) -> Self {
        Self {
            store,
            check_interval: DEFAULT_CHECK_INTERVAL,
            write_behind: false,
            always_write: false,
            failures: Arc::new(Rfc6750),
            start_on_password: false,
            call_wait: DEFAULT_REFRESH_LOCK_WAIT,
        }
    }
}

impl<St: TokenStore> Session<St> {
    /// Options for a session kept in `store`.
    pub fn builder_with_store(store: St) -> SessionBuilder<St> {
        SessionBuilder::with_store(store)
    }

    /// A session kept in `store` (see [`TokenStore`]; [`Session::new`] keeps it in a file).
    pub fn with_store(store: St) -> Self {
        SessionBuilder::with_store(store).build()
    }

    /// The store the token is kept in.
    pub fn store(&self) -> &St {
        &self.shared.store
    }

    /// A [`SessionLayer`](crate::SessionLayer) keeping this session.
    pub fn layer(&self) -> crate::SessionLayer<crate::NoReauth, St> {
        crate::SessionLayer::new(self.clone())
    }

    /// Reads the token from the session file, if there is one, and uses it from now on.
    ///
    /// A missing or blank file leaves the session without a token; a bad file is an error and
    /// leaves the session as it was. Temp files left by writers that died mid-write are removed.
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

    /// The token calls are made with now, if any.
    pub fn token(&self) -> Option<Token> {
        self.shared.current.load().token.clone()
    }

    /// When the current token expires, if it is a JWT with an `exp` claim.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.shared.current.load().token.as_ref()?.expires_at()
    }

    /// The `authorization` value for one call made by hand: `Bearer <token>`, marked sensitive.
    /// No token is [`Error::TokenNotProvided`].
    pub fn call_credentials(&self) -> Result<HeaderValue, Error> {
        self.shared
            .current
            .load()
            .token
            .as_ref()
            .map(Token::header_value)
            .ok_or(Error::TokenNotProvided)
    }

    /// Puts the session token on one tonic request by hand, the per-call alternative to
    /// [`SessionLayer`](crate::SessionLayer). No token is [`Error::TokenNotProvided`].
    ///
    /// ```
    /// # fn run(session: agent_session::Session) -> Result<(), agent_session::Error> {
    /// let mut request = tonic::Request::new(());
    /// session.authorize(&mut request)?;
    /// assert!(request.metadata().get("authorization").unwrap().is_sensitive());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tonic")]
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) -> Result<(), Error> {
        let header = self.call_credentials()?;
        // A token's header value is visible ASCII, which is what ASCII metadata holds.
        let mut value = tonic::metadata::AsciiMetadataValue::try_from(header.as_bytes())
            .map_err(|_| Error::TokenNotProvided)?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(())
    }

    /// Waits until every refreshed token this session accepted so far, and every token a
    /// password call brought, is on disk (or was found superseded there), and reports the last
    /// write's error if it failed.
    pub async fn flush(&self) -> Result<(), Error> {
        let mut password_writes = self.shared.password_writes.subscribe();
        // The sender lives in the session: waiting cannot fail.
        let _ = password_writes.wait_for(|&n| n == 0).await;
        let wait = {
            let mut state = self.shared.lock();
            if state.finished >= state.submitted {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let seq = state.submitted;
                state.waiters.push((seq, tx));
                Some(rx)
            }
        };
        if let Some(rx) = wait {
            let _ = rx.await;
        }
        match self.shared.lock().last_write_error.clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What this session did with refreshed tokens so far.
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

    /// The session as a call sent now finds it: take it before the call, and hand it to
    /// [`Session::refresh`] with the call's response.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        let current = self.shared.current.load();
        Epoch {
            epoch: current.epoch,
            had_token: current.token.is_some(),
        }
    }

    /// Takes the refreshed token a response brought, as [`SessionLayer`](crate::SessionLayer)
    /// does: for calls made with [`Session::authorize`] or [`Session::call_credentials`] (a
    /// tonic interceptor, say), where no layer sees the response.
    ///
    /// `sent` is [`Session::epoch`] taken before the call. The token is read from `headers`'
    /// `authorization: Bearer <t>` (a malformed one is ignored with a warning) and follows the
    /// layer's rules: dropped if the session changed since `sent` or if the call carried no
    /// session token, ignored on a rejection, used at once, and written to the file as a
    /// compare-and-swap (never over another process's unlock or lock). The future resolves when
    /// the write policy says the call may go on (see [`SessionBuilder::write_behind`]).
    ///
    /// ```no_run
    /// # async fn run(session: agent_session::Session, channel: tonic::transport::Channel)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use agent_session::agent::proto::{AgentServiceClient, EmptyMessage};
    ///
    /// let for_calls = session.clone();
    /// let mut client = AgentServiceClient::with_interceptor(channel, move |mut request| {
    ///     for_calls.authorize(&mut request)?;
    ///     Ok(request)
    /// });
    /// let sent = session.epoch();
    /// let reply = client.agent_status(EmptyMessage {}).await?;
    /// session.refresh(sent, &reply.metadata().clone().into_headers()).await;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self, sent: Epoch, headers: &http::HeaderMap) {
        if !sent.had_token
            || crate::error::is_rejection(http::StatusCode::OK, headers)
            || self
                .failures()
                .session_failure(http::StatusCode::OK, headers)
                .is_some()
        {
            return;
        }
        if let Some(value) = headers.get(http::header::AUTHORIZATION)
            && let Some(token) = self.current().token.as_ref()
            && token.is_header(value)
        {
            // The token in use again: compared, not parsed.
            if let Refresh::Saving(saved) = self.accept_refresh(token.clone(), sent.epoch) {
                saved.await;
            }
            return;
        }
        let token = match crate::bearer::bearer_from_headers(headers) {
            None => return,
            Some(Ok(token)) => token,
            Some(Err(why)) => {
                tracing::warn!(reason = %why, "ignoring a malformed refreshed token from the agent");
                return;
            }
        };
        if let Refresh::Saving(saved) = self.accept_refresh(token, sent.epoch) {
            saved.await;
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

    /// Starts the session with the token a password call sent in `epoch` brought (an explicit
    /// write, off the async workers), unless the session changed since (a lock, say). A failed
    /// write is reported by [`Session::flush`].
    pub(crate) fn start_from_password(&self, token: Token, epoch: u64) -> Refresh {
        if self.shared.current.load().token.as_ref() == Some(&token) {
            return Refresh::Done;
        }
        let (done, saved) = oneshot::channel::<()>();
        let write = PasswordWrite::new(self.clone());
        spawn_blocking_anywhere(move || {
            let shared = &write.session.shared;
            let _gate = shared.gate();
            if shared.lock().epoch != epoch {
                tracing::debug!("password call's token dropped: the session changed since");
            } else if let Err(e) = shared.start_blocking(token) {
                tracing::warn!(error = %e, "cannot write the token a password call brought");
                shared.lock().last_write_error = Some(e);
            }
            shared.schedule_next_check();
            drop(done);
        });
        Refresh::Saving(Saved::new(saved, self.shared.call_wait))
    }

    /// Keeps a failed write of a token the session took on its own (a recovery's) for
    /// [`Session::flush`] to report.
    pub(crate) fn note_write_error(&self, error: Error) {
        self.shared.lock().last_write_error = Some(error);
    }

    /// The epoch of the token in use.
    pub(crate) fn epoch_now(&self) -> u64 {
        self.shared.current.load().epoch
    }

    /// Re-reads the file; if it holds a token that is neither `sent` (the one that just failed)
    /// nor the one this process last wrote, another process put it there: use it.
    pub(crate) async fn reload_if_other(&self, sent: Option<Token>) -> Result<bool, Error> {
        self.explicit(move |shared| {
            let snapshot = shared.store.load()?;
            let mut state = shared.lock();
            let other = snapshot.token.is_some()
                && snapshot.token != sent
                && snapshot.token != state.synced;
            if other {
                shared
                    .stats
                    .external_changes
                    .fetch_add(1, Ordering::Relaxed);
                shared.adopt(&mut state, snapshot);
            }
            Ok(other)
        })
        .await
    }

    /// The token and epoch for one call.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Current>> {
        self.shared.current.load()
    }

    /// Whether this call should look at the file first; at most one call at a time is told yes.
    pub(crate) fn claim_check(&self) -> bool {
        let now = monotonic_nanos();
        now >= self.shared.next_check.load(Ordering::Relaxed)
            && !self.shared.checking.swap(true, Ordering::Acquire)
    }

    /// Looks for a change made to the file by another process (one `stat`; a read only when it
    /// changed), off the async workers. Call only after [`Session::claim_check`] said yes; the
    /// receiver resolves when the look is over, however it ended.
    pub(crate) fn check_file(&self) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        // Made before spawning, so that even a task dropped unrun releases the claim.
        let claim = CheckClaim {
            session: self.clone(),
            _done: done,
        };
        spawn_blocking_anywhere(move || claim.session.shared.check_file_blocking());
        finished
    }

    /// Takes a refreshed token that came back on a response to a call sent in `epoch`.
    pub(crate) fn accept_refresh(&self, token: Token, epoch: u64) -> Refresh {
        let shared = &self.shared;
        if shared.current.load().epoch != epoch {
            tracing::debug!("refreshed token dropped: the session changed since the call");
            return Refresh::Done;
        }
        let mut state = shared.lock();
        if state.epoch != epoch {
            tracing::debug!("refreshed token dropped: the session changed since the call");
            return Refresh::Done;
        }
        // The same token again (an agent that does not rotate, or two responses carrying one
        // token): wait for whatever write is taking it to disk, if any.
        if state.synced.as_ref() == Some(&token) {
            return Refresh::Done;
        }
        if state.pending.as_ref() == Some(&token) {
            let seq = state.submitted;
            return shared.wait_for(&mut state, seq);
        }
        if let Some((writing, seq)) = &state.writing
            && *writing == token
        {
            let seq = *seq;
            return shared.wait_for(&mut state, seq);
        }
        // Keep the freshest token in memory (responses can arrive out of order); of two that
        // expire together, the newer.
        if !outlives(shared.current.load().token.as_ref(), &token) {
            shared.current.store(Arc::new(Current {
                token: Some(token.clone()),
                epoch,
            }));
        }
        shared.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        // A JWT that expires no later than the one on disk buys nothing by being written: the
        // file's token lives as long. One on its way to disk covers it too, once written. With
        // `always_write`, only a token that expires strictly later than this one covers it.
        let covered = |held: Option<&Token>| shared.covered(held, &token);
        if covered(state.synced.as_ref()) {
            shared.stats.skipped_writes.fetch_add(1, Ordering::Relaxed);
            tracing::trace!("refresh accepted; the file's token lives as long");
            return Refresh::Done;
        }
        let covering = match (&state.pending, &state.writing) {
            (Some(pending), _) if covered(Some(pending)) => Some(state.submitted),
            (_, Some((writing, seq))) if covered(Some(writing)) => Some(*seq),
            _ => None,
        };
        if let Some(seq) = covering {
            shared.stats.skipped_writes.fetch_add(1, Ordering::Relaxed);
            return shared.wait_for(&mut state, seq);
        }
        tracing::debug!("refresh accepted");
        state.pending = Some(token);
        state.submitted += 1;
        let seq = state.submitted;
        let wait = shared.wait_for(&mut state, seq);
        if !state.writer_running {
            state.writer_running = true;
            drop(state);
            let writer = Writer {
                session: self.clone(),
                done: false,
            };
            spawn_blocking_anywhere(move || writer.run());
        }
        wait
    }
}

impl<St: TokenStore> Shared<St> {
    /// Whether writing `new` would buy nothing over `held`: `held` is a JWT that expires no
    /// earlier (strictly later with `always_write`, which writes every newer token).
    fn covered(&self, held: Option<&Token>, new: &Token) -> bool {
        if self.always_write {
            outlives(held, new)
        } else {
            covers(held, new)
        }
    }

    /// What a call whose refresh is covered by write `seq` waits for.
    fn wait_for(&self, state: &mut State<St::Version>, seq: u64) -> Refresh {
        if self.write_behind {
            return Refresh::Done;
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push((seq, tx));
        Refresh::Saving(Saved::new(rx, self.call_wait))
    }

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

    fn schedule_next_check(&self) {
        let next = monotonic_nanos().saturating_add(nanos(self.check_interval));
        self.next_check.store(next, Ordering::Relaxed);
    }

    fn check_file_blocking(&self) {
        let now = match self.store.version() {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the session file");
                return;
            }
        };
        if now == self.lock().stamp {
            return;
        }
        // Changed. Inside the gate no write of ours is half-recorded, so a stamp that still
        // differs from the one the state records is another process's doing.
        let _gate = self.gate();
        let known = self.lock().stamp;
        let snapshot = match self.store.load() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // Keep the token we have: a bad file must not replace a good token.
                tracing::warn!(error = %e, "the session file changed but cannot be used");
                self.lock().stamp = self.store.version().ok().flatten();
                return;
            }
        };
        let mut state = self.lock();
        if snapshot.version == known {
            return;
        }
        if state.synced == snapshot.token {
            state.stamp = snapshot.version;
            return;
        }
        tracing::info!(
            token_found = snapshot.token.is_some(),
            "session file changed by another process"
        );
        self.stats.external_changes.fetch_add(1, Ordering::Relaxed);
        self.adopt(&mut state, snapshot);
    }

    /// One refresh write: the newest pending refresh, compare-and-swapped against what this
    /// process last read or wrote. Returns false when there is nothing left to write.
    fn write_next(&self) -> bool {
        let _gate = self.gate();
        let (token, expected, seq) = {
            let mut state = self.lock();
            let Some(token) = state.pending.take() else {
                state.writer_running = false;
                return false;
            };
            let seq = state.submitted;
            // The write that just finished may have put a fresher token on disk than this
            // one, which arrived while it was under way: never write an older token over it.
            if self.covered(state.synced.as_ref(), &token) {
                state.finished = state.finished.max(seq);
                release_waiters(&mut state);
                return true;
            }
            state.writing = Some((token.clone(), seq));
            (token, state.synced.clone(), seq)
        };
        let started = Instant::now();
        let result = self.store.swap(expected.as_ref(), &token);
        // A write that failed after its rename left the token on disk all the same: find out,
        // so that it is not taken for another process's later.
        let on_disk = match &result {
            Err(Error::Locked { .. }) | Ok(_) => None,
            Err(_) => self.store.load().ok(),
        };
        let mut state = self.lock();
        state.writing = None;
        // Every change of epoch happens inside the gate, so the epoch is the one the refresh
        // was accepted in.
        match result {
            Ok(Swap::Replaced(stamp)) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                state.synced = Some(token);
                state.stamp = Some(stamp);
                state.last_write_error = None;
                tracing::debug!(elapsed = ?started.elapsed(), "refreshed token written");
            }
            Ok(Swap::Lost(snapshot)) => {
                self.stats.lost_refreshes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    token_found = snapshot.token.is_some(),
                    "refresh lost to another process; using what the file holds"
                );
                self.adopt(&mut state, snapshot);
            }
            Err(e) => {
                if let Error::Locked { .. } = e {
                    self.stats.lock_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        "refreshed token kept in memory; it is written with a later refresh"
                    );
                } else {
                    tracing::warn!(error = %e, "cannot write the refreshed token");
                }
                if let Some(stored) = on_disk
                    && stored.token.as_ref() == Some(&token)
                {
                    state.synced = stored.token;
                    state.stamp = stored.version;
                }
                state.last_write_error = Some(e);
            }
        }
        state.finished = state.finished.max(seq);
        release_waiters(&mut state);
        true
    }
}

/// The claim on the file check; released (and the next check scheduled) when dropped, however
/// the check ended: done, panicked, or never run.
struct CheckClaim<St: TokenStore> {
    session: Session<St>,
    _done: oneshot::Sender<()>,
}

impl<St: TokenStore> Drop for CheckClaim<St> {
    fn drop(&mut self) {
        let shared = &self.session.shared;
        shared.schedule_next_check();
        shared.checking.store(false, Ordering::Release);
    }
}

/// A write of the token a password call brought, counted while it is under way (dropped unrun
/// included), so that [`Session::flush`] waits for it.
struct PasswordWrite<St: TokenStore> {
    session: Session<St>,
}

impl<St: TokenStore> PasswordWrite<St> {
    fn new(session: Session<St>) -> Self {
        session.shared.password_writes.send_modify(|n| *n += 1);
        Self { session }
    }
}

impl<St: TokenStore> Drop for PasswordWrite<St> {
    fn drop(&mut self) {
        let writes = &self.session.shared.password_writes;
        writes.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The refresh writer of a session: writes until nothing is pending (group commit: one runs
/// at a time, and each write takes the newest refresh). If it dies or never runs, dropping it
/// releases every waiter, so no call waits forever.
struct Writer<St: TokenStore> {
    session: Session<St>,
    done: bool,
}

impl<St: TokenStore> Writer<St> {
    fn run(mut self) {
        while self.session.shared.write_next() {}
        self.done = true;
    }
}

impl<St: TokenStore> Drop for Writer<St> {
    fn drop(&mut self) {
        if !self.done {
            let shared = &self.session.shared;
            let mut state = shared.lock();
            tracing::error!("the session's refresh writer stopped early");
            state.writer_running = false;
            state.pending = None;
            state.writing = None;
            state.finished = state.submitted;
            release_waiters(&mut state);
        }
    }
}

/// A monotonic clock in nanoseconds, read on every call to see whether the file is due a look.
///
/// On Linux the coarse clock: a few milliseconds of resolution is plenty for an interval of a
/// second, and it costs a fraction of `Instant::now` on the hot path.
#[cfg(target_os = "linux")]
fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec`, and Linux has CLOCK_MONOTONIC_COARSE.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    if read != 0 {
        // Cannot happen on Linux; were it to, "always due" is slow but never wrong.
        return u64::MAX;
    }
    u64::try_from(now.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(now.tv_nsec).unwrap_or(0))
}

/// `Instant`, counted from the first reading in this process.
#[cfg(not(target_os = "linux"))]
fn monotonic_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    nanos(ORIGIN.get_or_init(Instant::now).elapsed())
}

/// A duration in nanoseconds, saturating: an interval too long to count is "never".
fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether `held` is a JWT that expires no earlier than the JWT `new`: then `new` buys nothing
/// over it. Opaque tokens are never covered: the newest one is all we know.
fn covers(held: Option<&Token>, new: &Token) -> bool {
    match (held.and_then(Token::exp_secs), new.exp_secs()) {
        (Some(held), Some(new)) => held >= new,
        _ => false,
    }
}

/// Whether `held` is a JWT that expires strictly after the JWT `new`.
fn outlives(held: Option<&Token>, new: &Token) -> bool {
    match (held.and_then(Token::exp_secs), new.exp_secs()) {
        (Some(held), Some(new)) => held > new,
        _ => false,
    }
}

fn release_waiters<V>(state: &mut State<V>) {
    let finished = state.finished;
    state.waiters.retain_mut(|(seq, _)| *seq > finished);
    // Dropping a sender wakes its receiver; no value is needed.
}

/// Runs blocking work off the async workers and waits for it, on any executor: the waiting is
/// a oneshot channel, which needs no runtime.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = oneshot::channel();
    spawn_blocking_anywhere(move || {
        let _ = tx.send(work());
    });
    rx.await.map_err(|_| {
        Error::Store(Arc::new(std::io::Error::other(
            "the session's blocking task stopped before it finished",
        )))
    })
}

/// `spawn_blocking` on the current runtime, or a plain thread when there is none (a response
/// polled outside tokio).
fn spawn_blocking_anywhere(work: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(work);
        }
        Err(_) => {
            // A thread that cannot be made drops the work, which releases whoever waits for
            // it (every piece of work here does so when dropped): an error, never a panic.
            let spawned = std::thread::Builder::new()
                .name("agent-session".into())
                .spawn(work);
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a thread for the session's file work");
            }
        }
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
