//! [`SessionLayer`]: attaches the session token to every request and keeps the refreshed token
//! that comes back.
//!
//! # Example
//!
//! ```no_run
//! use agent_session::{Session, SessionLayer};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::in_dir("/home/me/.agent");
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
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tower_layer::Layer;
use tower_service::Service;

use crate::bearer;
use crate::file::TokenFile;
use crate::message::{SessionRequest, SessionResponse};
use crate::peek::PeekedBody;
use crate::reauth::{self, NoReauth, Reauth, Reauthenticate};
use crate::replay::{BoxError, Recording, Tape, WrapBody};
use crate::saved::Saved;
use crate::session::{Refresh, Session};
use crate::store::TokenStore;
use crate::token::Token;

mod recovering;

/// A tower [`Layer`] that wraps services in a [`SessionService`].
///
/// Re-authentication is off by default; [`SessionLayer::reauthenticate_with`] turns it on.
#[derive(Debug, Clone)]
pub struct SessionLayer<R = NoReauth, St: TokenStore = TokenFile> {
    session: Session<St>,
    reauth: R,
}

impl<St: TokenStore> SessionLayer<NoReauth, St> {
    /// A layer keeping `session`.
    #[must_use]
    pub fn new(session: Session<St>) -> Self {
        Self {
            session,
            reauth: NoReauth,
        }
    }

    /// Turns re-authentication on: when a response is a session failure (`TokenNotProvided`
    /// or `TokenInvalid`), the layer
    ///
    /// 1. re-reads the session file, and uses a token another process put there, if any;
    /// 2. otherwise runs `reauthenticator` — once for all the calls failing at the same time,
    ///    and again on a later failure if it failed;
    /// 3. starts the session with the new token (written to disk) and replays the call once.
    ///
    /// A call that fails again after its replay hands that failure over; a call whose body was
    /// over the replay limit, or failed, hands over the first.
    /// A token is sent as it is whatever its JWT `exp` says (the agent's clock decides; see
    /// [`SessionLayer::renew_before_expiry`]). Request bodies must be [`WrapBody`] (tonic's is),
    /// and the service's error becomes a [`BoxError`].
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
    #[must_use]
    pub fn reauthenticate_with<F: Reauthenticate>(
        self,
        reauthenticator: F,
    ) -> SessionLayer<Reauth, St> {
        SessionLayer {
            session: self.session,
            reauth: Reauth::new(reauthenticator),
        }
    }
}

impl<St: TokenStore> SessionLayer<Reauth, St> {
    /// How many bytes of a request body are kept for a replay (default
    /// [`DEFAULT_REPLAY_LIMIT`](crate::DEFAULT_REPLAY_LIMIT)). Set before the layer is used.
    #[must_use]
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
    #[must_use]
    pub fn renew_before_expiry(self, margin: std::time::Duration) -> Self {
        Self {
            session: self.session,
            reauth: self.reauth.with_renewal(margin),
        }
    }
}

impl<S, R: Clone, St: TokenStore> Layer<S> for SessionLayer<R, St> {
    type Service = SessionService<S, R, St>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            session: self.session.clone(),
            reauth: self.reauth.clone(),
        }
    }
}

/// Adds `authorization: Bearer <token>` (marked sensitive) to each request that has no
/// `authorization` header of its own, and takes the refreshed token from each response.
///
/// Responses pass through unchanged, session failures included: turn them into a typed error
/// with [`Error::from_status`](crate::Error::from_status) or
/// [`Error::from_response`](crate::Error::from_response). (With re-authentication on, see
/// [`SessionLayer::reauthenticate_with`].)
///
/// A refreshed token is read from the response's `authorization` header (`Bearer <t>`, any
/// case, or the legacy `Bearer: <t>`) of a call that carried the session's token; a malformed
/// one is ignored with a warning and the old token stays. It is used for the next calls at
/// once and written to the session file; by default the response is handed over once it is
/// durable (see [`SessionBuilder::write_behind`](crate::SessionBuilder::write_behind)). The
/// header handed over is marked sensitive, so `Debug` of the response does not show it.
#[derive(Debug, Clone)]
pub struct SessionService<S, R = NoReauth, St: TokenStore = TokenFile> {
    inner: S,
    session: Session<St>,
    reauth: R,
}

impl<S, St: TokenStore> SessionService<S, NoReauth, St> {
    /// Wraps `inner`.
    pub fn new(inner: S, session: Session<St>) -> Self {
        Self {
            inner,
            session,
            reauth: NoReauth,
        }
    }

    /// A [`SessionLayer`] for `session`.
    pub fn layer(session: Session<St>) -> SessionLayer<NoReauth, St> {
        SessionLayer::new(session)
    }
}

impl<S, R, St: TokenStore> SessionService<S, R, St> {
    inner_service_accessors!();

    /// The session.
    pub fn session(&self) -> &Session<St> {
        &self.session
    }
}

impl<S, Req, St> Service<Req> for SessionService<S, NoReauth, St>
where
    St: TokenStore,
    S: Service<Req> + Clone,
    Req: SessionRequest,
    S::Response: SessionResponse,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, St>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if self.session.claim_check() {
            // Look at the file before sending: another process may have unlocked or locked.
            // The instance driven ready is the one that will be called.
            let clone = self.inner.clone();
            let inner = mem::replace(&mut self.inner, clone);
            return ResponseFuture {
                state: State::Checking {
                    check: self.session.check_file(),
                    pending: Some((inner, request)),
                },
                session: self.session.clone(),
                carried: Carried::Nothing,
            };
        }
        let (future, carried) = send(&mut self.inner, &self.session, request);
        ResponseFuture {
            state: State::Calling { future },
            session: self.session.clone(),
            carried,
        }
    }
}

/// What a request carried, which decides what a token on its response means.
#[derive(Debug, Clone, Copy)]
enum Carried {
    /// The session's token, in this epoch: a token on the response is a refresh.
    Session(u64),
    /// A password (`Basic`), with [`SessionBuilder::start_on_password`](crate::SessionBuilder)
    /// on, in this epoch: a token on the response starts the session, unless the session
    /// changed since.
    Password(u64),
    /// No token, or credentials of its own: a token on the response is not the session's.
    Nothing,
}

/// Attaches the token (unless the request carries its own credentials) and calls `inner`.
fn send<S, Req, St>(inner: &mut S, session: &Session<St>, mut request: Req) -> (S::Future, Carried)
where
    St: TokenStore,
    S: Service<Req>,
    Req: SessionRequest,
{
    let carried = attach_to(session, request.headers_mut());
    (inner.call(request), carried)
}

/// Puts the session's token on a request that has no `authorization` of its own, and says what
/// the request carries. One lookup decides both whether the request has credentials of its own
/// and where ours go.
fn attach_to<St: TokenStore>(session: &Session<St>, headers: &mut http::HeaderMap) -> Carried {
    match headers.entry(header::AUTHORIZATION) {
        header::Entry::Occupied(mut own) => {
            // Credentials are secrets whoever put them there: kept out of `Debug` and out of
            // HTTP/2's header compression table.
            own.get_mut().set_sensitive(true);
            if session.starts_on_password() && is_basic(own.get()) {
                Carried::Password(session.current().epoch)
            } else {
                Carried::Nothing
            }
        }
        header::Entry::Vacant(slot) => {
            let current = session.current();
            match &current.token {
                Some(token) => {
                    slot.insert(token.header_value());
                    Carried::Session(current.epoch)
                }
                None => Carried::Nothing,
            }
        }
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
    pub struct ResponseFuture<S, Req, St = TokenFile>
    where
        S: Service<Req>,
        St: TokenStore,
    {
        #[pin]
        state: State<S, Req>,
        session: Session<St>,
        carried: Carried,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Checking {
            check: oneshot::Receiver<()>,
            pending: Option<(S, Req)>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Saving {
            saved: Saved,
            response: Option<S::Response>,
        },
    }
}

impl<S, Req, St> Future for ResponseFuture<S, Req, St>
where
    St: TokenStore,
    S: Service<Req>,
    Req: SessionRequest,
    S::Response: SessionResponse,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    // Resolves when the look is over, however it ended; a failed one only means
                    // the file is looked at again later.
                    let _ = ready!(Pin::new(check).poll(cx));
                    let Some((mut inner, request)) = pending.take() else {
                        polled_after_completion()
                    };
                    let (future, carried) = send(&mut inner, this.session, request);
                    *this.carried = carried;
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let mut response = ready!(future.poll(cx))?;
                    if !hide_credentials(&mut response) {
                        return Poll::Ready(Ok(response));
                    }
                    match take_token(this.session, &response, *this.carried) {
                        Refresh::Done => return Poll::Ready(Ok(response)),
                        Refresh::Saving(saved) => this.state.set(State::Saving {
                            saved,
                            response: Some(response),
                        }),
                    }
                }
                StateProj::Saving { saved, response } => {
                    // The call's result is the agent's, handed over as it came, once the
                    // write is over or its bound has passed.
                    ready!(Pin::new(saved).poll(cx));
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        None => polled_after_completion(),
                    };
                }
            }
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
fn take_token<St: TokenStore>(
    session: &Session<St>,
    response: &impl SessionResponse,
    carried: Carried,
) -> Refresh {
    if let Carried::Nothing = carried {
        return Refresh::Done;
    }
    if crate::error::is_rejection(response.status(), response.headers()) {
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

impl<S, Req, St> std::fmt::Debug for ResponseFuture<S, Req, St>
where
    S: Service<Req>,
    St: TokenStore,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
