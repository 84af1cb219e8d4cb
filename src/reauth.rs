//! Re-authentication: a user-supplied way to get a new token, run once for all the calls that
//! fail at the same time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::replay::BoxError;
use crate::session::{Answer, Current, Session};
use crate::token::Token;

/// Gets a new session token: typically asks for the password and calls the agent's unlock
/// over a channel without the session layer.
///
/// Implemented for every `Fn() -> impl Future<Output = Result<Token, E>>`, so a closure will do:
///
/// ```
/// use tower_agent_session::{Reauthenticate, Token};
///
/// let unlock = || async {
///     // ask for the password, call SessionUnlock, …
///     Token::new("eyJhbGciOi.e30.c2ln").map_err(tower_agent_session::Error::from)
/// };
/// fn takes(_: impl Reauthenticate) {}
/// takes(unlock);
/// ```
pub trait Reauthenticate: Send + Sync + 'static {
    /// Starts getting a new token.
    fn reauthenticate(&self) -> Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;
}

impl<F, Fut, E> Reauthenticate for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Token, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn reauthenticate(&self) -> Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>> {
        let future = self();
        Box::pin(async move { future.await.map_err(Into::<BoxError>::into) })
    }
}

/// The layer's setting for re-authentication: off (`NoReauth`) or on (`Reauth`). A type-state
/// of [`SessionLayer`](crate::SessionLayer) and `SessionMiddleware`, public only as their type
/// parameter: nothing names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReauth;

/// Re-authentication is on: a [`Reauthenticate`], run single-flight, and the replay limit.
///
/// The re-authenticator is held as a trait object, so the service's type does not name the
/// closure (and the compiler need not prove its bounds again wherever a client's future must
/// be `Send`).
#[derive(Clone)]
pub struct Reauth {
    reauthenticator: Arc<dyn Reauthenticate>,
    /// The re-authenticator's type name, for `Debug` (as tonic does for interceptors).
    name: &'static str,
    /// How many bytes of a request body are kept for a replay.
    pub(crate) replay_limit: usize,
    /// Renew a token whose JWT `exp` falls within this margin before sending it.
    pub(crate) renew_before_expiry: Option<Duration>,
}

impl fmt::Debug for Reauth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reauth")
            .field("reauthenticator", &self.name)
            .field("replay_limit", &self.replay_limit)
            .field("renew_before_expiry", &self.renew_before_expiry)
            .finish()
    }
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

impl Reauth {
    pub(crate) fn new<R: Reauthenticate>(reauthenticator: R) -> Self {
        Self {
            reauthenticator: Arc::new(reauthenticator),
            name: std::any::type_name::<R>(),
            replay_limit: crate::SessionLayer::DEFAULT_REPLAY_LIMIT,
            renew_before_expiry: None,
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
        token.and_then(Token::expires_at).is_some_and(|exp| {
            SystemTime::now()
                .checked_add(margin)
                .is_none_or(|deadline| exp <= deadline)
        })
    }

    /// Gets the session a token other than `sent`'s, the one a call sent with it failed with
    /// (or none): at once if the session holds one already; else through the session's recovery, shared by
    /// every call failing together, which uses a token another process wrote to the store or
    /// has this call run the re-authenticator.
    ///
    /// A call that gives up waiting (a timeout, a dropped request) leaves the recovery going.
    /// On Tokio the re-authenticator runs in a task of its own, so that its caller giving up
    /// does not cut it short; on another executor it runs in the caller's future, and a caller
    /// that gives up hands it to another waiting call.
    pub(crate) async fn recover(&self, session: &Session, sent: Current) -> Result<(), Error> {
        let Some(waiting) = session.call_failed(sent.token, sent.epoch) else {
            return Ok(());
        };
        let number = match waiting.await {
            Answer::Replay | Answer::Done(_) => return Ok(()),
            Answer::Failed(e) => return Err(e),
            Answer::Reauthenticate(number) => number,
        };
        // This call runs the re-authenticator for recovery `number`, and reports to the session.
        let run = Run {
            reauthenticator: self.reauthenticator.clone(),
            session: session.clone(),
            number,
            reported: false,
        };
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn(tracing::Instrument::in_current_span(run.go()))
                .await
                .unwrap_or_else(|e| {
                    let e = format!("the re-authentication task failed: {e}");
                    Answer::Failed(Error::Reauthentication(Arc::new(std::io::Error::other(e))))
                }),
            Err(_) => run.go().await,
        };
        if let Answer::Failed(e) = answer {
            return Err(e);
        }
        // The runner's call goes on once the new token is durable, so that a process starting
        // now finds it; never longer than the call bound, so that a stopped holder of the file's
        // lock holds no call (the write goes on behind).
        session.written_within_call_bound().await;
        Ok(())
    }
}

/// One run of the re-authenticator. Dropped before it reported (its task panicked, or its
/// caller gave up on an executor where it cannot go on alone), it tells the session, which has
/// another waiting call run it.
struct Run {
    reauthenticator: Arc<dyn Reauthenticate>,
    session: Session,
    number: u64,
    reported: bool,
}

impl Run {
    async fn go(mut self) -> Answer {
        let reauthentication = REAUTHENTICATING.scope((), self.reauthenticator.reauthenticate());
        let result = reauthentication
            .await
            .map_err(|source| Error::Reauthentication(Arc::from(source)));
        self.reported = true;
        self.session.reauthenticated(self.number, result)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.reported {
            self.session.runner_gone(self.number);
        }
    }
}

/// What a call whose session could not be recovered fails with.
///
/// With tonic, a `tonic::Status` (tonic hands a boxed `Status` over as it is, and anything else
/// as `UNKNOWN`): the agent's own code where the agent answered the unlock (found in the
/// error's sources), `UNAUTHENTICATED` otherwise, and also where the agent's answer was a
/// session failure as the session's [`SessionFailures`](crate::SessionFailures) reads it (Polykey refuses a wrong password so, as `UNKNOWN`).
/// Its source is the crate's [`Error`], so `Error::from_status` finds
/// [`Error::Reauthentication`] and what caused it.
pub(crate) fn failure(error: Error, session: &Session) -> BoxError {
    #[cfg(feature = "tonic")]
    {
        let message = match std::error::Error::source(&error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        };
        let code = agent_status(&error)
            .filter(|status| Error::from_status_with(status, session.failures()).is_none())
            .map_or(tonic::Code::Unauthenticated, tonic::Status::code);
        let mut status = tonic::Status::new(code, message);
        status.set_source(Arc::new(error));
        Box::new(status)
    }
    #[cfg(not(feature = "tonic"))]
    {
        let _ = session;
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
    let cause: &(dyn std::error::Error + 'static) = &**cause;
    std::iter::successors(Some(cause), |error| error.source())
        .find_map(|error| error.downcast_ref::<tonic::Status>())
}
