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
//! use tower_agent_session::{Session, SessionLayer, TokenFile};
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

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header;
use tower_layer::Layer;
use tower_service::Service;

use crate::reauth::{NoReauth, Reauth, Reauthenticate};
use crate::response::Carried;
use crate::session::{Current, CurrentCache, Session};

mod future;
mod recovering;

pub use crate::message::{SessionRequest, SessionResponse};
pub use crate::peek::PeekedBody;
pub use crate::replay::WrapBody;
pub use future::ResponseFuture;
pub use recovering::ReauthService;

/// [`SessionLayer`] with re-authentication on, as
/// [`SessionLayer::reauthenticate_with`] makes it: for naming it (a struct field, a function's
/// return type).
pub type ReauthLayer = SessionLayer<Reauth>;
#[cfg(feature = "reqwest-middleware")]
pub(crate) use recovering::call_with_reauth;

/// A tower [`Layer`] that wraps services in a [`SessionService`], or with re-authentication
/// on ([`SessionLayer::reauthenticate_with`]) in a [`ReauthService`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionLayer<R = NoReauth> {
    pub(crate) session: Session,
    pub(crate) reauth: R,
}

impl SessionLayer {
    /// How many bytes of a request body are kept for a replay by default (64 KiB; see
    /// [`SessionLayer::replay_limit`]): a unary call or a small client stream fits; a larger
    /// body is sent once and not replayed.
    pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

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
    /// [`SessionLayer::renew_before_expiry`]). The service's error becomes a
    /// [`BoxError`](crate::BoxError).
    ///
    /// Over `http` types (tonic, hyper), request bodies must be [`WrapBody`]
    /// (tonic's is): they are recorded up to the replay limit. Over reqwest, the request is
    /// copied with `try_clone` (a streaming body cannot be, and is not replayed).
    ///
    /// The re-authenticator should call the agent without this layer (a channel of its own, as
    /// below). A call it makes through the layer is sent with what the session holds and
    /// never waits for the recovery it is part of, but only from the re-authenticator's own
    /// task: a call from a task it spawns (`tokio::spawn`) is like any other call, and would
    /// wait for that recovery until the call's own timeout.
    ///
    /// A failed re-authentication is [`Error::Reauthentication`](crate::Error). Over `http`
    /// types, with the `tonic` feature, it reaches the caller as a `tonic::Status` whose source
    /// is that error: the agent's own status when the agent refused the unlock,
    /// `UNAUTHENTICATED` otherwise, so that tonic hands it over as it is rather than as
    /// `UNKNOWN`. Over reqwest it is the crate's [`Error`](crate::Error), boxed.
    ///
    /// ```no_run
    /// # async fn run(session: tower_agent_session::Session, password_channel: tonic::transport::Channel) {
    /// use tower_agent_session::proto::{AgentServiceClient, PasswordMessage};
    /// use tower_agent_session::{SessionLayer, Token};
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
    /// [`SessionLayer::DEFAULT_REPLAY_LIMIT`](crate::SessionLayer::DEFAULT_REPLAY_LIMIT)).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.reauth.replay_limit = bytes;
        self
    }

    /// Renews the token before sending a call when its JWT `exp` falls within `margin` by this
    /// machine's clock, instead of waiting for the agent to refuse it. Off by default.
    ///
    /// For re-authenticators that need no person (a password from a vault, a client
    /// certificate): with a prompt, a clock that runs ahead of the agent's would ask for a
    /// password the agent never wanted. A token renewed this way is not renewed again before
    /// the agent has refused it.
    pub fn renew_before_expiry(mut self, margin: Duration) -> Self {
        self.reauth.renew_before_expiry = Some(margin);
        self
    }
}

impl<S, R: Clone> Layer<S> for SessionLayer<R> {
    type Service = SessionService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            session: self.session.clone(),
            current: self.session.current_cache(),
            reauth: self.reauth.clone(),
        }
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
///
/// With re-authentication on (`R` is the layer's setting) it is a [`ReauthService`].
#[derive(Clone)]
pub struct SessionService<S, R = NoReauth> {
    inner: S,
    session: Session,
    /// The session's token, read with one atomic load while it does not change.
    current: CurrentCache,
    reauth: R,
}

impl<S> SessionService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, session: Session) -> Self {
        SessionLayer::new(session).layer(inner)
    }
}

impl<S, R> SessionService<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Attaches and calls: [`Service::call`], for every `R`.
    #[inline]
    fn attach_and_call<Req>(&mut self, mut request: Req) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
        Req: SessionRequest,
    {
        let carried = attach(self.current.load(), &self.session, request.headers_mut());
        let span = call_span(&request, carried);
        ResponseFuture {
            future: self.inner.call(request),
            saving: None,
            done: false,
            session: self.session.clone(),
            carried,
            span,
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for SessionService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .field("session", &self.session)
            .finish()
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
        self.attach_and_call(request)
    }
}

/// The span of one call: the session's events about it (its refresh taken, written or dropped;
/// its recovery), and those of the work it starts, are inside it. Its fields never hold a
/// credential.
///
/// `None` when no subscriber wants it (nothing at `DEBUG`): a call then pays a check of the
/// level, and its future carries no span.
fn call_span(request: &impl SessionRequest, carried: Carried) -> Option<Box<tracing::Span>> {
    if tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG {
        return None;
    }
    let (credentials, epoch) = match carried {
        Carried::Session(epoch) => ("session", Some(epoch)),
        Carried::Password(epoch) => ("password", Some(epoch)),
        Carried::Nothing | Carried::Own => ("none or own", None),
    };
    let span = tracing::debug_span!("session_call", path = request.path(), credentials, epoch);
    (!span.is_disabled()).then(|| Box::new(span))
}

/// Puts the session's token on a request that has no `authorization` of its own, and says what
/// the request carries.
///
/// Most requests have no `authorization` of their own and no name repeated: then one insert
/// is all the work, as in a static-header layer (a lookup before it cost a tonic call's
/// request about 75 instructions; an `entry`, more than both).
#[inline]
fn attach(current: &Current, session: &Session, headers: &mut http::HeaderMap) -> Carried {
    let mut own = None;
    // As many values as names: the insert replaces at most one value, which it hands back.
    if let Some(token) = &current.token
        && headers.len() == headers.keys_len()
    {
        own = headers.insert(header::AUTHORIZATION, token.header_value());
        if own.is_none() {
            return Carried::Session(current.epoch);
        }
    }
    attach_otherwise(current, session, headers, own)
}

/// [`attach`] for the other requests: `own` is the request's value that its insert replaced,
/// put back first in its place.
#[cold]
#[inline(never)]
fn attach_otherwise(
    current: &Current,
    session: &Session,
    headers: &mut http::HeaderMap,
    own: Option<http::HeaderValue>,
) -> Carried {
    if let Some(own) = own {
        headers.insert(header::AUTHORIZATION, own);
    }
    // Credentials are secrets whoever put them there: kept out of `Debug` and out of HTTP/2's
    // header compression table.
    if let Some(own) = hide_credentials(headers) {
        return if session.starts_on_password() && is_basic(&own) {
            Carried::Password(current.epoch)
        } else {
            Carried::Own
        };
    }
    match &current.token {
        Some(token) => {
            headers.insert(header::AUTHORIZATION, token.header_value());
            Carried::Session(current.epoch)
        }
        None => Carried::Nothing,
    }
}

/// Marks every `authorization` value in `headers` sensitive, so that `Debug` of the message
/// never prints a credential (a request's own, a response's refreshed token), and HTTP/2 never
/// puts one in its compression table. The bytes are unchanged.
///
/// Returns the first of them (a reference count, not a copy), so that reading it takes no
/// second lookup: one lookup in the common case of none, and no `entry` (which may grow the
/// map) unless some header is repeated.
#[inline]
fn hide_credentials(headers: &mut http::HeaderMap) -> Option<http::HeaderValue> {
    let value = headers.get_mut(&header::AUTHORIZATION)?;
    value.set_sensitive(true);
    let first = value.clone();
    // Another value of `authorization` makes more values than names: without one, no second
    // lookup.
    if headers.len() != headers.keys_len()
        && let header::Entry::Occupied(mut values) = headers.entry(header::AUTHORIZATION)
    {
        values
            .iter_mut()
            .for_each(|value| value.set_sensitive(true));
    }
    Some(first)
}

/// Whether `value` is `Basic` credentials (a password).
fn is_basic(value: &http::HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
}
