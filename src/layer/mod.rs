//! [`SessionLayer`]: attaches the session token to every request and keeps the refreshed token
//! that comes back; with re-authentication on, recovers from a session failure and replays.
//!
//! One path for every call: [`SessionService`] attaches, and its [`ResponseFuture`] hides the
//! response's credentials and takes its token. [`ReauthService`] wraps a `SessionService`, so a
//! re-authenticating call and its replay go through that same path; it adds only what
//! re-authentication needs (recording the body, recognising the failure, recovering).
//!
//! # Example
//!
//! ```no_run
//! use agent_session::{Session, SessionLayer, TokenFile};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(TokenFile::in_dir("/home/me/.agent"));
//! session.start().await?;
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let service = ServiceBuilder::new()
//!     .layer(SessionLayer::new(session.clone()))
//!     .service(channel);
//! // Hand `service` to any tonic client: `AgentServiceClient::new(service)`.
//! # let _ = service; Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::bearer;
use crate::message::{SessionRequest, SessionResponse};
use crate::reauth::{NoReauth, Reauth, Reauthenticate};
use crate::saved::Saved;
use crate::session::{Refresh, Session};
use crate::token::Token;

mod recovering;

pub use recovering::ReauthService;
#[cfg(feature = "reqwest-middleware")]
pub(crate) use recovering::{CallError, call_with_reauth};

/// A tower [`Layer`] that wraps services in a [`SessionService`], or with re-authentication
/// on ([`SessionLayer::reauthenticate_with`]) in a [`ReauthService`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionLayer<R = NoReauth> {
    session: Session,
    reauth: R,
}

impl SessionLayer {
    /// A layer keeping `session`.
    pub fn new(session: Session) -> Self {
        Self {
            session,
            reauth: NoReauth,
        }
    }

    /// Turns re-authentication on: when a response is a session failure (`TokenNotProvided`
    /// or `TokenInvalid`, as the session's [`SessionFailures`](crate::SessionFailures) reads
    /// it), the layer
    ///
    /// 1. re-reads the session file, and uses a token another process put there, if any;
    /// 2. otherwise runs `reauthenticator` — once for all the calls failing at the same time,
    ///    and again on a later failure if it failed;
    /// 3. starts the session with the new token (written to disk) and replays the call once.
    ///
    /// A call that fails again after its replay hands that failure over; a call whose body was
    /// over the replay limit, or failed, hands over the first.
    /// A token is sent as it is whatever its JWT `exp` says (the agent's clock decides; see
    /// [`SessionLayer::renew_before_expiry`]). Request bodies must be
    /// [`WrapBody`](crate::WrapBody) (tonic's is), and the service's error becomes a
    /// [`BoxError`](crate::BoxError).
    ///
    /// A failed re-authentication is [`Error::Reauthentication`](crate::Error); with the
    /// `tonic` feature it reaches the caller as a `tonic::Status` whose source is that error:
    /// the agent's own status when the agent refused the unlock, `UNAUTHENTICATED` otherwise,
    /// so that tonic hands it over as it is rather than as `UNKNOWN`.
    ///
    /// ```no_run
    /// # async fn run(session: agent_session::Session, password_channel: tonic::transport::Channel) {
    /// use agent_session::agent::proto::{AgentServiceClient, PasswordMessage};
    /// use agent_session::{SessionLayer, Token};
    ///
    /// let unlock = move || {
    ///     let mut client = AgentServiceClient::new(password_channel.clone());
    ///     async move {
    ///         let password = std::env::var("AGENT_PASSWORD")?;
    ///         let reply = client.session_unlock(PasswordMessage { password }).await?;
    ///         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Token::new(reply.into_inner().token)?)
    ///     }
    /// };
    /// let layer = SessionLayer::new(session).reauthenticate_with(unlock);
    /// # }
    /// ```
    pub fn reauthenticate_with<F: Reauthenticate>(
        self,
        reauthenticator: F,
    ) -> SessionLayer<Reauth> {
        SessionLayer {
            session: self.session,
            reauth: Reauth::new(reauthenticator),
        }
    }
}

impl SessionLayer<Reauth> {
    /// How many bytes of a request body are kept for a replay (default
    /// [`DEFAULT_REPLAY_LIMIT`](crate::DEFAULT_REPLAY_LIMIT)).
    pub fn replay_limit(self, bytes: usize) -> Self {
        Self {
            session: self.session,
            reauth: self.reauth.with_replay_limit(bytes),
        }
    }

    /// Renews the token before sending a call when its JWT `exp` falls within `margin` by this
    /// machine's clock, instead of waiting for the agent to refuse it. Off by default.
    ///
    /// For re-authenticators that need no person (a password from a vault, a client
    /// certificate): with a prompt, a clock that runs ahead of the agent's would ask for a
    /// password the agent never wanted. A token renewed this way is not renewed again before
    /// the agent has refused it.
    pub fn renew_before_expiry(self, margin: std::time::Duration) -> Self {
        Self {
            session: self.session,
            reauth: self.reauth.with_renewal(margin),
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.session.clone())
    }
}

impl<S> Layer<S> for SessionLayer<Reauth> {
    type Service = ReauthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReauthService::new(
            SessionService::new(inner, self.session.clone()),
            self.reauth.clone(),
        )
    }
}

/// Adds `authorization: Bearer <token>` (marked sensitive) to each request that has no
/// `authorization` header of its own, and takes the refreshed token from each response.
///
/// Responses pass through unchanged, session failures included: turn them into a typed error
/// with [`Error::from_status`](crate::Error::from_status) or
/// [`Error::from_response`](crate::Error::from_response), or let a [`ReauthService`] recover.
///
/// A refreshed token is read from the response's `authorization` header (`Bearer <t>`, any
/// case, or the legacy `Bearer: <t>`) of a call that carried the session's token; a malformed
/// one is ignored with a warning and the old token stays. It is used for the next calls at
/// once and written to the session file as [`AgentTokens`](crate::AgentTokens) says. The
/// header handed over is marked sensitive, so `Debug` of the response does not show it.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    session: Session,
}

impl<S> SessionService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, session: Session) -> Self {
        Self { inner, session }
    }

    inner_service_accessors!();

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Attaches and calls; also says which token the request went with, for a recovery.
    pub(crate) fn send<Req>(&mut self, mut request: Req) -> (ResponseFuture<S::Future>, Sent)
    where
        S: Service<Req>,
        Req: SessionRequest,
    {
        let sent = attach(&self.session, request.headers_mut());
        let future = ResponseFuture {
            state: State::Calling {
                future: self.inner.call(request),
            },
            session: self.session.clone(),
            carried: sent.carried,
        };
        (future, sent)
    }
}

impl<S, Req> Service<Req> for SessionService<S>
where
    S: Service<Req>,
    Req: SessionRequest,
    S::Response: SessionResponse,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.send(request).0
    }
}

/// What a request carried, which decides what a token on its response means.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Carried {
    /// The session's token, in this epoch: a token on the response is a refresh.
    Session(u64),
    /// A password (`Basic`), with [`SessionBuilder::start_on_password`](crate::SessionBuilder)
    /// on, in this epoch: a token on the response starts the session, unless the session
    /// changed since.
    Password(u64),
    /// No token, or credentials of its own: a token on the response is not the session's.
    Nothing,
}

/// How a request left: what it carried, the session token it carried (if any), and the epoch
/// of the session then.
pub(crate) struct Sent {
    pub(crate) carried: Carried,
    pub(crate) token: Option<Token>,
    pub(crate) epoch: u64,
}

/// Puts the session's token on a request that has no `authorization` of its own, and says what
/// the request carries. One lookup decides both whether the request has credentials of its own
/// and where ours go.
fn attach(session: &Session, headers: &mut http::HeaderMap) -> Sent {
    let current = session.current();
    match headers.entry(header::AUTHORIZATION) {
        header::Entry::Occupied(mut own) => {
            // Credentials are secrets whoever put them there: kept out of `Debug` and out of
            // HTTP/2's header compression table.
            own.get_mut().set_sensitive(true);
            let carried = if session.starts_on_password() && is_basic(own.get()) {
                Carried::Password(current.epoch)
            } else {
                Carried::Nothing
            };
            Sent {
                carried,
                token: None,
                epoch: current.epoch,
            }
        }
        header::Entry::Vacant(slot) => match &current.token {
            Some(token) => {
                slot.insert(token.header_value());
                Sent {
                    carried: Carried::Session(current.epoch),
                    token: Some(token.clone()),
                    epoch: current.epoch,
                }
            }
            None => Sent {
                carried: Carried::Nothing,
                token: None,
                epoch: current.epoch,
            },
        },
    }
}

/// Whether `value` is `Basic` credentials (a password).
fn is_basic(value: &http::HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
}

pin_project! {
    /// The response future of [`SessionService`].
    ///
    /// # Panics
    ///
    /// When polled again after it completed, as tonic's futures do: that is a bug of the
    /// caller's.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        state: State<F>,
        session: Session,
        carried: Carried,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F>
    where
        F: Future,
    {
        Calling {
            #[pin]
            future: F,
        },
        Saving {
            saved: Saved,
            response: Option<F::Output>,
        },
        Done,
    }
}

impl<F, Res, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Res, E>>,
    Res: SessionResponse,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.state.as_mut().project() {
            StateProj::Calling { future } => {
                let result = ready!(future.poll(cx));
                this.state.set(State::Done);
                let mut response = result?;
                if !hide_credentials(&mut response) {
                    return Poll::Ready(Ok(response));
                }
                match take_token(this.session, &response, *this.carried) {
                    Refresh::Done => Poll::Ready(Ok(response)),
                    Refresh::Saving(mut saved) => {
                        if Pin::new(&mut saved).poll(cx).is_ready() {
                            return Poll::Ready(Ok(response));
                        }
                        this.state.set(State::Saving {
                            saved,
                            response: Some(Ok(response)),
                        });
                        Poll::Pending
                    }
                }
            }
            StateProj::Saving { saved, response } => {
                // The call's result is the agent's, handed over as it came, once the write is
                // over or its bound has passed.
                ready!(Pin::new(saved).poll(cx));
                let response = response.take();
                this.state.set(State::Done);
                match response {
                    Some(response) => Poll::Ready(response),
                    None => polled_after_completion(),
                }
            }
            StateProj::Done => polled_after_completion(),
        }
    }
}

/// Marks the response's `authorization` values sensitive, so that the application's `Debug` of
/// the response or its metadata never prints a refreshed token. The bytes are unchanged.
///
/// Returns whether there is any: one lookup in the common case of none, and no `entry` (which
/// may grow the map) unless the header is repeated.
fn hide_credentials(response: &mut impl SessionResponse) -> bool {
    let headers = response.headers_mut();
    match headers.get_mut(header::AUTHORIZATION) {
        None => return false,
        Some(value) => value.set_sensitive(true),
    }
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
        && let header::Entry::Occupied(mut values) = headers.entry(header::AUTHORIZATION)
    {
        for value in values.iter_mut() {
            value.set_sensitive(true);
        }
    }
    true
}

/// Takes the token a response brought, as what the request `carried` makes it: a refresh of
/// the session's token, or the start of a session after a password call.
fn take_token(session: &Session, response: &impl SessionResponse, carried: Carried) -> Refresh {
    if let Carried::Nothing = carried {
        return Refresh::Done;
    }
    if session.refuses(response.status(), response.headers()) {
        // A rejection refreshes nothing: a token on it (from a faulty agent, or something in
        // between) is not the agent's word that the session goes on.
        tracing::warn!("ignoring a token on a rejected call");
        return Refresh::Done;
    }
    match carried {
        Carried::Session(epoch) => session.take_refresh(response.headers(), epoch),
        Carried::Password(epoch) => bearer::token_from_agent(response.headers())
            .map_or(Refresh::Done, |token| {
                session.start_from_password(token, epoch)
            }),
        Carried::Nothing => Refresh::Done,
    }
}

/// A future polled again after it completed: the caller broke the `Future` contract.
fn polled_after_completion() -> ! {
    panic!("session ResponseFuture polled after completion")
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
