//! Re-authentication: a user-supplied way to get a new token, run once for all the calls that
//! fail at the same time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::replay::{BoxError, DEFAULT_REPLAY_LIMIT};
use crate::session::Session;
use crate::token::Token;

/// The future a [`Reauthenticate`] returns.
pub type ReauthFuture = Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;

/// Gets a new session token: typically asks for the password and calls the agent's unlock
/// over a channel without the session layer.
///
/// Implemented for every `Fn() -> impl Future<Output = Result<Token, E>>`, so a closure will do:
///
/// ```
/// use agent_session::{Reauthenticate, Token};
///
/// let unlock = || async {
///     // ask for the password, call SessionUnlock, …
///     Token::new("eyJhbGciOi.e30.c2ln").map_err(agent_session::Error::from)
/// };
/// fn takes(_: impl Reauthenticate) {}
/// takes(unlock);
/// ```
pub trait Reauthenticate: Send + Sync + 'static {
    /// Starts getting a new token.
    fn reauthenticate(&self) -> ReauthFuture;
}

impl<F, Fut, E> Reauthenticate for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn reauthenticate(&self) -> ReauthFuture {
        // A named future rather than an `async` block: the compiler then knows the boxed
        // error's lifetime is `'static` wherever the client's future must be `Send`.
        Box::pin(IntoBoxError { future: self() })
    }
}

pin_project_lite::pin_project! {
    struct IntoBoxError<Fut> {
        #[pin]
        future: Fut,
    }
}

impl<Fut, E> Future for IntoBoxError<Fut>
where
    Fut: Future<Output = Result<Token, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Token, BoxError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.project().future.poll(cx).map_err(Into::into)
    }
}

/// The layer's setting for re-authentication: off ([`NoReauth`]) or on ([`Reauth`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReauth;

/// Re-authentication is on: a [`Reauthenticate`], run single-flight, and the replay limit.
///
/// The re-authenticator is held as a trait object, so the service's type does not name the
/// closure (and the compiler need not prove its bounds again wherever a client's future must
/// be `Send`).
#[derive(Clone)]
pub struct Reauth {
    shared: Arc<Flight>,
    replay_limit: usize,
    renew_before_expiry: Option<Duration>,
}

impl fmt::Debug for Reauth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reauth")
            .field("reauthenticator", &self.shared.name)
            .field("replay_limit", &self.replay_limit)
            .field("renew_before_expiry", &self.renew_before_expiry)
            .finish()
    }
}

struct Flight {
    reauthenticator: Box<dyn Reauthenticate>,
    /// The re-authenticator's type name, for `Debug` (as tonic does for interceptors).
    name: &'static str,
    /// Counts finished recoveries; a call that failed before the count moved shares the
    /// outcome of the recovery that moved it instead of starting its own.
    generation: AtomicU64,
    last: tokio::sync::Mutex<Outcome>,
    /// The epoch the last successful recovery started: its token is not renewed before a call
    /// even if its `exp` looks past (a clock ahead of the agent's must not prompt on every call).
    recovered_epoch: AtomicU64,
}

tokio::task_local! {
    /// Set while the re-authenticator runs: a call it makes through a layered channel (a user's
    /// mistake, but an easy one) must not wait for the recovery it is part of.
    static REAUTHENTICATING: ();
}

/// Whether this task is the re-authenticator's own.
pub(crate) fn reauthenticating() -> bool {
    REAUTHENTICATING.try_with(|()| ()).is_ok()
}

#[derive(Clone)]
enum Outcome {
    None,
    Recovered,
    Failed(Error),
}

impl Reauth {
    pub(crate) fn new<R: Reauthenticate>(reauthenticator: R) -> Self {
        Self {
            shared: Arc::new(Flight {
                reauthenticator: Box::new(reauthenticator),
                name: std::any::type_name::<R>(),
                generation: AtomicU64::new(0),
                last: tokio::sync::Mutex::new(Outcome::None),
                recovered_epoch: AtomicU64::new(u64::MAX),
            }),
            replay_limit: DEFAULT_REPLAY_LIMIT,
            renew_before_expiry: None,
        }
    }

    /// The same re-authenticator, renewing tokens that expire within `margin`.
    pub(crate) fn with_renewal(self, margin: Duration) -> Self {
        Self {
            renew_before_expiry: Some(margin),
            ..self
        }
    }

    /// Whether `token` should be renewed before it is sent: only when renewal was asked for,
    /// and its JWT `exp` is within the margin by this machine's clock. Off by default, since
    /// the agent's clock is the one that counts, and a client clock that runs ahead must not
    /// make a user type a password the agent never asked for.
    pub(crate) fn due_for_renewal(&self, token: Option<&Token>) -> bool {
        let Some(margin) = self.renew_before_expiry else {
            return false;
        };
        let Some(exp) = token.and_then(Token::expires_at) else {
            return false;
        };
        SystemTime::now()
            .checked_add(margin)
            .is_none_or(|deadline| exp <= deadline)
    }

    /// The same re-authenticator with another replay limit.
    pub(crate) fn with_replay_limit(self, limit: usize) -> Self {
        Self {
            replay_limit: limit,
            ..self
        }
    }

    pub(crate) fn replay_limit(&self) -> usize {
        self.replay_limit
    }

    /// Read when a call is sent: a call shares the outcome of any recovery that finishes
    /// after this point instead of starting its own.
    pub(crate) fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Whether the token in `epoch` came from the last successful recovery.
    pub(crate) fn just_recovered(&self, epoch: u64) -> bool {
        self.shared.recovered_epoch.load(Ordering::Acquire) == epoch
    }

    /// Gets the session a token other than the one that failed (`sent`, in `epoch`):
    /// another process's (re-read from the file), or a new one from the re-authenticator,
    /// started with an explicit write. Once for all calls failing together.
    ///
    /// On Tokio the recovery runs in a task of its own, so a caller that gives up (a timeout, a
    /// dropped request) does not cut it short and make the next caller start another. On
    /// another executor it runs in the caller's future, which must then be polled to the end.
    pub(crate) async fn recover(
        &self,
        session: &Session,
        epoch: u64,
        sent: Option<Token>,
        seen_generation: u64,
    ) -> Result<(), Error> {
        let flight = self.shared.clone();
        let session = session.clone();
        let recovery = async move { flight.recover(&session, epoch, sent, seen_generation).await };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return recovery.await;
        };
        match runtime
            .spawn(tracing::Instrument::in_current_span(recovery))
            .await
        {
            Ok(result) => result,
            Err(e) => Err(Error::Reauthentication(Arc::new(std::io::Error::other(
                format!("the re-authentication task failed: {e}"),
            )))),
        }
    }
}

impl Flight {
    async fn recover(
        &self,
        session: &Session,
        epoch: u64,
        sent: Option<Token>,
        seen_generation: u64,
    ) -> Result<(), Error> {
        let mut last = self.last.lock().await;
        if self.generation.load(Ordering::Acquire) != seen_generation {
            // A recovery finished after this call was sent: share its outcome.
            return match &*last {
                Outcome::Failed(e) => Err(e.clone()),
                _ => Ok(()),
            };
        }
        if session.epoch_now() != epoch {
            // The session moved on since this call was sent (an unlock, another process's
            // token picked up): replay with what it holds now.
            return Ok(());
        }
        let outcome = self.recover_now(session, sent).await;
        if let Outcome::Recovered = outcome {
            self.recovered_epoch
                .store(session.epoch_now(), Ordering::Release);
        }
        *last = outcome.clone();
        self.generation.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Outcome::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    async fn recover_now(&self, session: &Session, sent: Option<Token>) -> Outcome {
        match session.reload_if_other(sent).await {
            Ok(true) => {
                tracing::info!("another process holds a new token; using it");
                return Outcome::Recovered;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot re-read the session file"),
        }
        tracing::info!("re-authenticating");
        let reauthentication = REAUTHENTICATING.scope((), self.reauthenticator.reauthenticate());
        let token = match reauthentication.await {
            Ok(token) => token,
            Err(source) => {
                tracing::warn!("re-authentication failed");
                return Outcome::Failed(Error::Reauthentication(Arc::from(source)));
            }
        };
        if let Err(e) = session.start_with_token(token).await {
            // The token is in use all the same; only the next process will not see it, which
            // `Session::flush` reports.
            tracing::warn!(error = %e, "cannot write the new token");
            session.note_write_error(e);
        }
        Outcome::Recovered
    }
}

/// What a call whose session could not be recovered fails with.
///
/// With tonic, a `tonic::Status` (tonic hands a boxed `Status` over as it is, and anything else
/// as `UNKNOWN`): the agent's own code where the agent answered the unlock (found in the
/// error's sources), `UNAUTHENTICATED` otherwise, and also where the agent's answer was a
/// session failure as `failures` reads it (Polykey refuses a wrong password so, as `UNKNOWN`).
/// Its source is the crate's [`Error`], so `Error::from_status` finds
/// [`Error::Reauthentication`] and what caused it.
pub(crate) fn failure(error: Error, failures: &dyn crate::SessionFailures) -> BoxError {
    #[cfg(feature = "tonic")]
    {
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        let message = match cause {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        };
        let code = match agent_status(&error) {
            Some(status) if Error::from_status_with(status, failures).is_none() => status.code(),
            _ => tonic::Code::Unauthenticated,
        };
        let mut status = tonic::Status::new(code, message);
        status.set_source(Arc::new(error));
        Box::new(status)
    }
    #[cfg(not(feature = "tonic"))]
    {
        let _ = failures;
        Box::new(error)
    }
}

/// The first `tonic::Status` in what made the re-authenticator fail: the agent's answer to the
/// unlock.
#[cfg(feature = "tonic")]
fn agent_status(error: &Error) -> Option<&tonic::Status> {
    let Error::Reauthentication(cause) = error else {
        return None;
    };
    // From the cause itself: an `Arc`'s `source` skips what the `Arc` holds.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&**cause);
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            return Some(status);
        }
        source = error.source();
    }
    None
}
