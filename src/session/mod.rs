//! [`Session`]: the current token, shared by the layer and the application, kept in step with
//! the store.
//!
//! ```text
//!  calls ──(one atomic load)──▶ Current ◀──publish── driver ◀── one step at a time ──▶ Owner
//!  responses: refresh, failure ─┐                      │  handle(now, Event) -> Effects
//!  Session::start / clear / … ──┼──▶ Event ──▶ driver ─┤
//!  watch: version, changed ─────┤                      ├──▶ store reads & writes (blocking)
//!  store & lock reports ────────┘                      ├──▶ tries for the reauth lock
//!                                                      ├──▶ answers to waiting calls
//!                                                      └──▶ the log (after the mutex)
//! ```
//!
//! Calls read [`Current`] and nothing else. Everything that happens to the session is an
//! [`Event`](owner::Event) for the [`Owner`](owner::Owner) (`owner.rs`), which decides alone,
//! in the order events come, with no I/O; the driver (`driver.rs`) runs what it decides, and
//! what that brings back is the next event. The entry points: `from_calls.rs` (what calls
//! hand back), `by_hand.rs` (what an application calls around calls it makes itself), this file
//! (the explicit changes), `watch.rs` (another process's change).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::failures::{Failures, SessionFailures};
use crate::file::TokenFile;
use crate::saved::Saved;
use crate::store::TokenStore;
use crate::token::Token;

mod builder;
mod by_hand;
mod driver;
mod from_calls;
mod owner;
mod policy;
mod published;
mod watch;

pub use builder::SessionBuilder;
pub use by_hand::Epoch;
pub(crate) use driver::{Reply, Waiting};
pub(crate) use owner::Answer;
pub use policy::AgentTokens;
pub(crate) use published::CurrentCache;
use published::Published;
pub use watch::Watch;

/// A client's session: the current token, in memory and in a [`TokenStore`](crate::store::TokenStore) (the session
/// file, [`TokenFile`], or a store of your own).
///
/// A cheap `Clone` handle: clones share one state. The layer reads the token on every call
/// without a lock or a syscall; refreshed tokens that come back on responses are written to the
/// store as [`AgentTokens`] says; a token another process writes to the session file is picked
/// up as soon as the file changes (see [`Watch`]).
///
/// ```no_run
/// use tower_agent_session::{Session, Token, TokenFile};
///
/// # async fn run() -> Result<(), tower_agent_session::Error> {
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
    /// Writes of the store that failed for another reason (a read-only or full disk, say).
    pub failed_writes: u64,
    /// Re-authenticators run, once for all the calls failing together.
    pub reauthentications: u64,
    /// Re-authentications that failed.
    pub failed_reauthentications: u64,
    /// Calls that failed for their session while a recovery was under way, and shared it
    /// instead of starting their own.
    pub shared_recoveries: u64,
}

struct Shared {
    store: Box<dyn TokenStore>,
    /// The store, when it is the session file itself: for [`Session::file`] alone (the
    /// watch and the re-authentication lock are the store's to say, whatever wraps it).
    file: Option<TokenFile>,
    /// What a call reads: the token and the epoch it belongs to, published by the owner's
    /// steps. Shared with the services' [`CurrentCache`]s.
    current: Arc<Published>,
    /// The one owner of everything else (see `owner.rs`), and who waits for its answers.
    driven: Mutex<driver::Driven>,
    watch: Watch,
    /// The watch on the session file once armed; dropped with the session.
    watcher: Mutex<Option<watch::Armed>>,
    /// Whether the watch's last look at the store failed, so that a failure repeated at every
    /// poll is warned of once.
    look_failing: AtomicBool,
    failures: Failures,
    start_on_password: bool,
    /// The longest a call waits for the write of the token its response brought.
    call_wait: Duration,
    /// Told when a recovery starts waiting for another process's re-authentication.
    on_reauth_wait: Option<builder::OnReauthWait>,
}

/// The token calls use, and the epoch it belongs to.
///
/// The epoch changes on every explicit change (start, unlock, clear, a token adopted from the
/// file), so a refresh that answers a call sent before the change is recognised and dropped.
#[derive(Default, Clone)]
pub(crate) struct Current {
    pub(crate) token: Option<Token>,
    pub(crate) epoch: u64,
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
        self.explicit(owner::Event::Start).await
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
        self.explicit(move |waiter| owner::Event::Unlock(token, waiter))
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
        self.explicit(owner::Event::Clear).await?;
        tracing::debug!("session cleared");
        Ok(())
    }

    /// Waits until every refreshed token this session accepted so far, and every token a
    /// password call or a recovery brought, is in the store (or was found superseded there),
    /// and reports the last write's error if it failed.
    ///
    /// # Errors
    ///
    /// The last write's error: [`Error::Locked`] when another process held the session file's
    /// lock past the bound, [`Error::WriteFile`] when the file could not be written.
    pub async fn flush(&self) -> Result<(), Error> {
        self.explicit(owner::Event::Flush).await
    }

    /// Runs `end_all` (the agent's lock all), then clears the session ([`Session::clear`]), as
    /// one step for every process that shares the store: this process holds the store's
    /// re-authentication lock ([`TokenStore::reauth_lock`]) across both, so that no other
    /// process re-authenticates in between (its new token would be removed with the file, and
    /// its calls fail again). Nothing is cleared if `end_all` fails.
    ///
    /// The lock is waited for at most its bound ([`TokenFile::reauth_wait`]); past it, or when
    /// the lock cannot be taken at all (its file cannot be made), `end_all` runs without it,
    /// with a warning: the user asked for every session to end, and that must not wait on a
    /// lock. A recovery of this process's own calls that begins meanwhile goes on under the
    /// lock, and keeps it until its token is written.
    ///
    /// ```no_run
    /// # async fn run(session: tower_agent_session::Session,
    /// #     mut client: tower_agent_session::proto::AgentServiceClient<tonic::transport::Channel>)
    /// # -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_agent_session::proto::EmptyMessage;
    ///
    /// session
    ///     .clear_after(async { client.sessions_lock_all(EmptyMessage {}).await })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `end_all`'s error, or [`Session::clear`]'s.
    pub async fn clear_after<T, E: From<Error>>(
        &self,
        end_all: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let (id, reply) = self.shared.ask(owner::Event::LockAll);
        // The lock all is over however this ends, a dropped future included.
        let _over = LockAllOver(self, id);
        if let Answer::Done(Err(e)) = answered(reply).await {
            tracing::warn!(
                error = %e,
                "cannot hold the re-authentication lock; locking all without it"
            );
        }
        let ended = end_all.await?;
        self.clear().await?;
        Ok(ended)
    }

    /// An explicit change: one event for the owner, then its answer.
    async fn explicit(
        &self,
        change: impl FnOnce(owner::WaiterId) -> owner::Event,
    ) -> Result<(), Error> {
        match answered(self.shared.ask(change).1).await {
            Answer::Done(result) => result,
            _ => Ok(()),
        }
    }

    /// What this session did with refreshed tokens so far.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        self.shared.look(owner::Owner::counts)
    }

    /// How the agent says a call failed for its session.
    pub(crate) fn failures(&self) -> &dyn SessionFailures {
        self.shared.failures.read()
    }

    /// Whether a password call's token starts the session.
    #[inline]
    pub(crate) fn starts_on_password(&self) -> bool {
        self.shared.start_on_password
    }

    /// A cache of the published token and epoch for one service: reading it costs one atomic
    /// load while the session does not change (the hot path), where a plain read takes a lock.
    pub(crate) fn current_cache(&self) -> CurrentCache {
        CurrentCache::new(self.shared.current.clone())
    }
}

/// The owner's answer to an event, now or once it comes.
async fn answered(reply: Reply) -> Answer {
    match reply {
        Reply::Now(answer) => answer,
        Reply::Later(waiting) => waiting.await,
    }
}

/// Tells the owner that [`Session::clear_after`]'s lock all is over.
struct LockAllOver<'a>(&'a Session, owner::WaiterId);

impl Drop for LockAllOver<'_> {
    fn drop(&mut self) {
        self.0.shared.tell(owner::Event::Gone(self.1));
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
