//! [`SessionBuilder`]: the options of a [`Session`].

use std::any::Any;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Session, Shared, Watch, driver, owner};
use crate::failures::{Failures, Rfc6750, SessionFailures};
use crate::file::TokenFile;
use crate::session::policy::AgentTokens;
use crate::store::TokenStore;

/// Options for a [`Session`], made by [`Session::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_agent_session::{AgentTokens, Polykey, Session, TokenFile, Watch};
///
/// let session = Session::builder(TokenFile::in_dir("/home/me/.agent"))
///     .agent_tokens(AgentTokens::LiveUntilExpiry)
///     .failures(Polykey)
///     .watch(Watch::Poll(Duration::from_secs(1))) // a network filesystem
///     .build();
/// # let _ = session;
/// ```
#[must_use]
pub struct SessionBuilder(Shared);

/// What a session calls when it starts waiting for another process's re-authentication.
pub(super) type OnReauthWait = Arc<dyn Fn(Option<u32>) + Send + Sync>;

impl SessionBuilder {
    pub(super) fn new<St: TokenStore>(store: St) -> Self {
        let file = (&store as &dyn Any).downcast_ref::<TokenFile>().cloned();
        let call_wait = match &file {
            Some(file) => file.refresh_lock_wait,
            None => TokenFile::DEFAULT_REFRESH_LOCK_WAIT,
        };
        let reauth_wait = store.reauth_lock().map(|lock| lock.bound());
        let owner = owner::Owner::new(AgentTokens::default(), reauth_wait, Instant::now());
        Self(Shared {
            store: Box::new(store),
            file,
            current: Arc::default(),
            driven: Mutex::new(driver::Driven::new(owner)),
            watch: Watch::default(),
            watcher: Mutex::new(None),
            look_failing: AtomicBool::new(false),
            failures: Failures::new(Rfc6750),
            start_on_password: false,
            call_wait,
            on_reauth_wait: None,
        })
    }

    /// What the agent does with the token a refresh replaces (default
    /// [`AgentTokens::LiveUntilExpiry`]): which refreshes are written, and whether a call
    /// waits for its write.
    pub fn agent_tokens(mut self, agent_tokens: AgentTokens) -> Self {
        let driven = self.0.driven.get_mut();
        driven
            .unwrap_or_else(PoisonError::into_inner)
            .owner
            .agent_tokens = agent_tokens;
        self
    }

    /// How the session learns of another process's change to the session file (default
    /// [`Watch::Notify`]).
    pub fn watch(mut self, watch: Watch) -> Self {
        self.0.watch = watch;
        self
    }

    /// How the agent says a call failed for its session (default [`Rfc6750`]; a Polykey agent
    /// is [`Polykey`](crate::Polykey)): what re-authentication recovers from.
    pub fn failures(mut self, failures: impl SessionFailures) -> Self {
        self.0.failures = Failures::new(failures);
        self
    }

    /// Whether a token on the response to a call made with a password (`authorization: Basic
    /// …`) starts the session, as an explicit write, the way an unlock does. Off by default.
    ///
    /// On for agents, like Polykey's, whose every call accepts the password and answers it with
    /// a session token: a call made with the password is an unlock. The call completes once
    /// the token is written (or the write failed, with a warning).
    pub fn start_on_password(mut self, on: bool) -> Self {
        self.0.start_on_password = on;
        self
    }

    /// How long a call waits for the write of the token its response brought, when it waits
    /// (a password call's token, or a refresh with [`AgentTokens::RevokedOnRefresh`]), counted
    /// from its response. By default, as long as the session file's refresh write waits for its
    /// lock ([`TokenFile::refresh_lock_wait`], 1 s unless set), or 1 s for another store. The
    /// write goes on after, and [`Session::flush`] waits for it. This is not a lock wait: those
    /// are all the session file's ([`TokenFile::lock_wait`], [`TokenFile::refresh_lock_wait`],
    /// [`TokenFile::reauth_wait`]).
    pub fn call_wait(mut self, wait: Duration) -> Self {
        self.0.call_wait = wait;
        self
    }

    /// Calls `waiting` when a recovery starts waiting for another process that re-authenticates
    /// the same session file, with that process's pid if it could be read: for a command-line
    /// client to say so on its terminal (the event is also logged at `INFO`).
    ///
    /// ```
    /// # let store = tower_agent_session::store::MemoryStore::new();
    /// let session = tower_agent_session::Session::builder(store)
    ///     .on_reauth_wait(|pid| match pid {
    ///         Some(pid) => eprintln!("waiting for process {pid} to unlock…"),
    ///         None => eprintln!("waiting for another process to unlock…"),
    ///     })
    ///     .build();
    /// # let _ = session;
    /// ```
    pub fn on_reauth_wait(mut self, waiting: impl Fn(Option<u32>) + Send + Sync + 'static) -> Self {
        self.0.on_reauth_wait = Some(Arc::new(waiting));
        self
    }

    /// Makes the session. It holds no token until [`Session::start`] or
    /// [`Session::start_with_token`].
    #[must_use]
    pub fn build(self) -> Session {
        Session {
            shared: Arc::new(self.0),
        }
    }
}

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("file", &self.0.file.as_ref().map(TokenFile::path))
            .field("agent_tokens", &self.0.look(|owner| owner.agent_tokens))
            .field("watch", &self.0.watch)
            .field("start_on_password", &self.0.start_on_password)
            .field("call_wait", &self.0.call_wait)
            .finish_non_exhaustive()
    }
}
