//! [`SessionBuilder`]: the options of a [`Session`].

use std::any::Any;

use super::*;

/// Options for a [`Session`], made by [`Session::builder`].
///
/// ```
/// use std::time::Duration;
/// use agent_session::{AgentTokens, Polykey, Session, TokenFile, Watch};
///
/// let session = Session::builder(TokenFile::in_dir("/home/me/.agent"))
///     .agent_tokens(AgentTokens::LiveUntilExpiry)
///     .failures(Polykey)
///     .watch(Watch::Poll(Duration::from_secs(1))) // a network filesystem
///     .build();
/// # let _ = session;
/// ```
#[must_use]
pub struct SessionBuilder {
    store: Box<dyn TokenStore>,
    file: Option<TokenFile>,
    agent_tokens: AgentTokens,
    watch: Watch,
    failures: Arc<dyn SessionFailures>,
    start_on_password: bool,
    call_wait: Duration,
    reauth_wait: Duration,
    on_reauth_wait: Option<OnReauthWait>,
}

/// What a session calls when it starts waiting for another process's re-authentication.
pub(super) type OnReauthWait = Arc<dyn Fn(Option<u32>) + Send + Sync>;

/// How long a recovery waits, by default, for another process that re-authenticates the same
/// session file: long enough for a person to type a password at that process's prompt (or look
/// it up), short enough that a process stopped there (Ctrl-Z) does not hold every other
/// process for long. A holder that dies hands over at once.
const DEFAULT_REAUTH_WAIT: Duration = Duration::from_secs(60);

impl SessionBuilder {
    pub(super) fn new<St: TokenStore>(store: St) -> Self {
        let file = (&store as &dyn Any).downcast_ref::<TokenFile>().cloned();
        Self {
            store: Box::new(store),
            file,
            agent_tokens: AgentTokens::default(),
            watch: Watch::default(),
            failures: Arc::new(Rfc6750),
            start_on_password: false,
            call_wait: DEFAULT_REFRESH_LOCK_WAIT,
            reauth_wait: DEFAULT_REAUTH_WAIT,
            on_reauth_wait: None,
        }
    }

    /// What the agent does with the token a refresh replaces (default
    /// [`AgentTokens::LiveUntilExpiry`]): which refreshes are written, and whether a call
    /// waits for its write.
    pub fn agent_tokens(mut self, agent_tokens: AgentTokens) -> Self {
        self.agent_tokens = agent_tokens;
        self
    }

    /// How the session learns of another process's change to the session file (default
    /// [`Watch::Notify`]).
    pub fn watch(mut self, watch: Watch) -> Self {
        self.watch = watch;
        self
    }

    /// How the agent says a call failed for its session (default [`Rfc6750`]; a Polykey agent
    /// is [`Polykey`](crate::Polykey)): what re-authentication recovers from.
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
    pub fn start_on_password(mut self, on: bool) -> Self {
        self.start_on_password = on;
        self
    }

    /// How long a call waits for the write of the token its response brought, when it waits
    /// (a password call's token, or a refresh with [`AgentTokens::RevokedOnRefresh`]), counted
    /// from its response (default
    /// [`TokenFile::DEFAULT_REFRESH_LOCK_WAIT`](crate::TokenFile::DEFAULT_REFRESH_LOCK_WAIT)). The write goes on
    /// after, and [`Session::flush`] waits for it.
    pub fn call_wait(mut self, wait: Duration) -> Self {
        self.call_wait = wait;
        self
    }

    /// How long a recovery waits for another process that re-authenticates the same session
    /// file (default 60 s: time for a person to type a password there). Within the wait, the
    /// other process's token is used as soon as it is written; a holder that dies hands over at
    /// once; past the wait, this process re-authenticates itself. A call that waits can give up
    /// sooner (a timeout, a drop) without ending the recovery.
    pub fn reauth_wait(mut self, wait: Duration) -> Self {
        self.reauth_wait = wait;
        self
    }

    /// Calls `waiting` when a recovery starts waiting for another process that re-authenticates
    /// the same session file, with that process's pid if it could be read: for a command-line
    /// client to say so on its terminal (the event is also logged at `INFO`).
    ///
    /// ```
    /// # let store = agent_session::store::MemoryStore::new();
    /// let session = agent_session::Session::builder(store)
    ///     .on_reauth_wait(|pid| match pid {
    ///         Some(pid) => eprintln!("waiting for process {pid} to unlock…"),
    ///         None => eprintln!("waiting for another process to unlock…"),
    ///     })
    ///     .build();
    /// # let _ = session;
    /// ```
    pub fn on_reauth_wait(mut self, waiting: impl Fn(Option<u32>) + Send + Sync + 'static) -> Self {
        self.on_reauth_wait = Some(Arc::new(waiting));
        self
    }

    /// How long writes wait for another process's lock on the session file: a refresh write
    /// (default [`TokenFile::DEFAULT_REFRESH_LOCK_WAIT`](crate::TokenFile::DEFAULT_REFRESH_LOCK_WAIT)) and an
    /// explicit write or removal (default [`TokenFile::DEFAULT_LOCK_WAIT`](crate::TokenFile::DEFAULT_LOCK_WAIT)).
    /// Also sets [`SessionBuilder::call_wait`] to `refresh`. No effect on a store that is not
    /// the session file.
    ///
    /// A refresh that gives up stays in memory, is written with a later refresh, and is
    /// counted in [`SessionStats::lock_timeouts`]. An explicit change that gives up fails with
    /// [`Error::Locked`].
    pub fn lock_wait(mut self, refresh: Duration, explicit: Duration) -> Self {
        if let Some(file) = self.file.take() {
            let file = file.refresh_lock_wait(refresh).lock_wait(explicit);
            self.store = Box::new(file.clone());
            self.file = Some(file);
        }
        self.call_wait = refresh;
        self
    }

    /// Makes the session. It holds no token until [`Session::start`] or
    /// [`Session::start_with_token`].
    #[must_use]
    pub fn build(self) -> Session {
        Session {
            shared: Arc::new(Shared {
                store: self.store,
                file: self.file,
                current: Arc::new(ArcSwap::from_pointee(Current {
                    token: None,
                    epoch: 0,
                })),
                driven: Mutex::new(driver::Driven::new(owner::Owner::new(self.agent_tokens))),
                watch: self.watch,
                watcher: Mutex::new(None),
                look_failing: AtomicBool::new(false),
                failures: self.failures,
                start_on_password: self.start_on_password,
                call_wait: self.call_wait,
                epochs: tokio::sync::watch::Sender::new(0),
                reauth_guard: Mutex::default(),
                reauth_wait: self.reauth_wait,
                on_reauth_wait: self.on_reauth_wait,
            }),
        }
    }
}

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("file", &self.file.as_ref().map(TokenFile::path))
            .field("agent_tokens", &self.agent_tokens)
            .field("watch", &self.watch)
            .field("start_on_password", &self.start_on_password)
            .field("call_wait", &self.call_wait)
            .field("reauth_wait", &self.reauth_wait)
            .finish_non_exhaustive()
    }
}
