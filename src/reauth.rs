//! Re-authentication: a user-supplied way to get a new token, run once for all the calls that
//! fail at the same time.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::replay::{BoxError, DEFAULT_REPLAY_LIMIT};
use crate::session::{Answer, Session};
use crate::token::Token;

/// The future a [`Reauthenticate`] returns.
type ReauthFuture = Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;

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
    fn reauthenticate(&self) -> Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;
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
            shared: Arc::new(Flight {
                reauthenticator: Box::new(reauthenticator),
                name: std::any::type_name::<R>(),
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

    /// Gets the session a token other than `sent`, the one a call sent in `epoch` failed with
    /// (or none): at once if the session holds one already; else through the session's recovery, shared by
    /// every call failing together, which uses a token another process wrote to the store or
    /// has this call run the re-authenticator.
    ///
    /// A call that gives up waiting (a timeout, a dropped request) leaves the recovery going.
    /// On Tokio the re-authenticator runs in a task of its own, so that its caller giving up
    /// does not cut it short; on another executor it runs in the caller's future, and a caller
    /// that gives up hands it to another waiting call.
    pub(crate) async fn recover(
        &self,
        session: &Session,
        sent: Option<Token>,
        epoch: u64,
    ) -> Result<(), Error> {
        let Some(waiting) = session.call_failed(sent, epoch) else {
            return Ok(());
        };
        match waiting.await {
            Answer::Replay | Answer::Done(_) => Ok(()),
            Answer::Failed(e) => Err(e),
            Answer::Reauthenticate(number) => self.run(session, number).await,
        }
    }

    /// Runs the re-authenticator for recovery `number`, and reports to the session.
    async fn run(&self, session: &Session, number: u64) -> Result<(), Error> {
        let run = Run {
            flight: self.shared.clone(),
            session: session.clone(),
            number,
            reported: false,
        };
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                match runtime
                    .spawn(tracing::Instrument::in_current_span(run.go()))
                    .await
                {
                    Ok(answer) => answer,
                    Err(e) => Answer::Failed(Error::Reauthentication(Arc::new(
                        std::io::Error::other(format!("the re-authentication task failed: {e}")),
                    ))),
                }
            }
            Err(_) => run.go().await,
        };
        match answer {
            Answer::Failed(e) => Err(e),
            _ => {
                // The runner's call goes on once the new token is durable, so that a process
                // starting now finds it; never longer than the call bound, so that a stopped
                // holder of the file's lock holds no call (the write goes on behind).
                session.written_within_call_bound().await;
                Ok(())
            }
        }
    }
}

/// One run of the re-authenticator. Dropped before it reported (its task panicked, or its
/// caller gave up on an executor where it cannot go on alone), it tells the session, which has
/// another waiting call run it.
struct Run {
    flight: Arc<Flight>,
    session: Session,
    number: u64,
    reported: bool,
}

impl Run {
    async fn go(mut self) -> Answer {
        let reauthentication =
            REAUTHENTICATING.scope((), self.flight.reauthenticator.reauthenticate());
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
