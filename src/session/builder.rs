//! [`SessionBuilder`]: the options of a [`Session`].

use super::*;

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

impl<St: TokenStore> SessionBuilder<St> {
    /// Checks the file for changes made by other processes at most this often (default
    /// [`DEFAULT_CHECK_INTERVAL`]). `Duration::ZERO` checks before every call.
    #[must_use]
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
    #[must_use]
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
    #[must_use]
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

    /// How long a call waits for the write of the token its response brought (a refresh, or a
    /// password call's), counted from its response (default
    /// [`DEFAULT_REFRESH_LOCK_WAIT`](crate::DEFAULT_REFRESH_LOCK_WAIT)); the write goes on after,
    /// and [`Session::flush`] waits for it. [`SessionBuilder::lock_wait`] sets it for the session
    /// file.
    #[must_use]
    pub fn call_wait(mut self, wait: Duration) -> Self {
        self.call_wait = wait;
        self
    }

    /// Makes the session. It holds no token until [`Session::start`] or
    /// [`Session::start_with_token`].
    #[must_use]
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
    #[must_use]
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
