//! [`AuthLayer`]: the agent's gate. Lets through calls with a valid session token and hands
//! back a refreshed one; turns the others away with an RFC 6750 challenge.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::drain::drain;
use super::error::VerifyError;
use super::manager::{SessionManager, VerifiedKey};
use super::rejection::{Rejection, Rejections, is_grpc};
use crate::bearer::{Credentials, credentials, lone_bearer};

/// The realm named in challenges unless [`AuthLayer::realm`] says otherwise.
pub const DEFAULT_REALM: &str = "agent";

/// A response extension by which a handler asks [`AuthLayer`] not to add a refreshed token.
///
/// tonic copies a `tonic::Response`'s extensions to the HTTP response, so a gRPC handler can
/// set it:
///
/// ```
/// use tower_agent_session_agent::NoRefresh;
///
/// let mut response = tonic::Response::new(());
/// response.extensions_mut().insert(NoRefresh);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoRefresh;

/// Checks the session token of every call and refreshes it.
///
/// Usable on a tonic server (`Server::builder().layer(AuthLayer::new(manager))`) and on any
/// service of `http::Request`s whose request body is an [`http_body::Body`] (`Send`, `'static`)
/// and whose response body has a `Default` (the body of a rejection).
///
/// A call is checked as follows:
///
/// - its path is one of the [allowed paths](AuthLayer::allow_path): the inner service is called
///   and its response passed on untouched;
/// - no bearer token in `authorization` (or not the `Bearer` scheme): rejected with
///   `www-authenticate: Bearer realm="<realm>"` and
///   [`TOKEN_NOT_PROVIDED_MESSAGE`](tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE);
/// - a token that fails [`SessionManager::verify`]: rejected with
///   `www-authenticate: Bearer realm="<realm>", error="invalid_token", error_description="…"` and
///   [`TOKEN_INVALID_MESSAGE`](tower_agent_session::Error::TOKEN_INVALID_MESSAGE);
/// - a valid token: the inner service is called, and its response gets a refreshed token in
///   `authorization: Bearer <token>` (a sensitive header value; for gRPC, the response's
///   initial metadata): the key's refresh of the current second, minted by the first call of
///   that second and the same for every other (see [`SessionManager`]).
///
/// A rejection never reaches the inner service. Its request body is not dropped but read to its
/// end on a task of the current Tokio runtime (at most 64 KiB, for at most a second): over
/// HTTP/2, a small DATA frame that arrives after its body was dropped costs the connection part
/// of h2's small-frame budget for good, and enough of them end the connection with
/// `GOAWAY(ENHANCE_YOUR_CALM)`; a gRPC client's message can still be on its way when its token
/// is refused.
///
/// For a gRPC request (`content-type` starting with `application/grpc`) a rejection is a
/// trailers-only response: HTTP 200, `grpc-status: 16` (`UNAUTHENTICATED`) and the
/// percent-encoded message in `grpc-message`, beside the challenge. Any other request gets HTTP
/// 401.
///
/// No refreshed token is added when the response already has an `authorization` header, when it
/// is itself a rejection (401 or `grpc-status: 16`), when the request's path is a
/// [no-refresh path](AuthLayer::no_refresh_path), when the response carries the [`NoRefresh`]
/// extension, or when the key was rotated (a *lock all*) after the token was verified: the
/// refreshed token is signed with the key that verified the request, so a call cannot outlive a
/// lock-all with a working token.
///
/// ```
/// use std::convert::Infallible;
/// use tower_agent_session_agent::{AuthLayer, SessionManager};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = SessionManager::new()?;
/// let service = ServiceBuilder::new()
///     .layer(AuthLayer::new(manager.clone()).realm("agent"))
///     .service_fn(|_: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::from("hello")))
///     });
///
/// let anonymous = http::Request::new(String::new());
/// let response = service.clone().oneshot(anonymous).await?;
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["www-authenticate"], r#"Bearer realm="agent""#);
///
/// let token = manager.mint()?;
/// let signed_in = http::Request::builder()
///     .header("authorization", token.header_value())
///     .body(String::new())?;
/// let response = service.oneshot(signed_in).await?;
/// assert_eq!(response.status(), 200);
/// assert!(response.headers().contains_key("authorization"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AuthLayer {
    manager: SessionManager,
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    rejections: Rejections,
    allowed: Vec<String>,
    no_refresh: Vec<String>,
}

impl AuthLayer {
    /// A layer checking tokens against `manager`, with realm [`DEFAULT_REALM`], no allowed path
    /// and no no-refresh path.
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            config: Arc::new(Config {
                rejections: Rejections::new(DEFAULT_REALM),
                allowed: Vec::new(),
                no_refresh: Vec::new(),
            }),
        }
    }

    /// Sets the realm named in `www-authenticate` challenges.
    ///
    /// Characters that cannot appear in a header (controls, non-ASCII) are dropped; quotes and
    /// backslashes are escaped.
    pub fn realm(mut self, realm: impl AsRef<str>) -> Self {
        Arc::make_mut(&mut self.config).rejections = Rejections::new(realm.as_ref());
        self
    }

    /// Lets calls to `path` (e.g. `/agent.v1.AgentService/SessionUnlock`) through without a
    /// token. Their responses are passed on untouched.
    pub fn allow_path(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).allowed.push(path.into());
        self
    }

    /// Checks calls to `path` as usual but adds no refreshed token to their responses (e.g.
    /// `/agent.v1.AgentService/SessionsLockAll`). A handler can do the same per response with
    /// [`NoRefresh`].
    pub fn no_refresh_path(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).no_refresh.push(path.into());
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            manager: self.manager.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

/// The service made by [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    manager: SessionManager,
    config: Arc<Config>,
}

impl<S> AuthService<S> {
    /// An [`AuthLayer`] checking tokens against `manager`.
    pub fn layer(manager: SessionManager) -> AuthLayer {
        AuthLayer::new(manager)
    }

    inner_service_accessors!();
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for AuthService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: http_body::Body + Send + 'static,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let path = request.uri().path();
        if self.config.allowed.iter().any(|p| p == path) {
            return ResponseFuture::called(self.inner.call(request), None);
        }
        let refresh_wanted = !self.config.no_refresh.iter().any(|p| p == path);
        match check(&self.manager, request.headers()) {
            Ok(key) => {
                let refresh = refresh_wanted.then(|| Refresh {
                    manager: self.manager.clone(),
                    key,
                });
                ResponseFuture::called(self.inner.call(request), refresh)
            }
            Err(rejection) => {
                tracing::debug!(path, ?rejection, "session token refused");
                let (status, headers) = self
                    .config
                    .rejections
                    .get(rejection, is_grpc(request.headers()));
                drain(request.into_body());
                ResponseFuture {
                    kind: Kind::Rejected { status, headers },
                }
            }
        }
    }
}

/// The key that verified the call's token, or why the call is turned away.
///
/// A token this key verified before is recognised by its bytes (the usual case: a client sends
/// the refresh it was given); anything else is read in full and checked.
fn check(manager: &SessionManager, headers: &HeaderMap) -> Result<VerifiedKey, Rejection> {
    if let Some(checked) = lone_bearer(headers).and_then(|bytes| manager.verify_cached(bytes)) {
        return checked.map_err(Rejection::Invalid);
    }
    match credentials(headers) {
        Credentials::None => Err(Rejection::NotProvided),
        Credentials::Conflicting => Err(Rejection::Conflicting),
        Credentials::Malformed => Err(Rejection::Invalid(VerifyError::Malformed)),
        Credentials::Token(token) => manager.verify_key(&token).map_err(Rejection::Invalid),
    }
}

/// What is needed to refresh the token once the inner service has answered.
struct Refresh {
    manager: SessionManager,
    key: VerifiedKey,
}

impl Refresh {
    fn apply<B>(self, response: &mut Response<B>) {
        if response.extensions().get::<NoRefresh>().is_some()
            || response.headers().contains_key(AUTHORIZATION)
            || is_rejection(response)
        {
            return;
        }
        match self.manager.refresh(&self.key) {
            Some(Ok(value)) => {
                response.headers_mut().insert(AUTHORIZATION, value);
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "cannot mint a refreshed session token");
            }
            None => tracing::debug!("the key was rotated during the call; no refreshed token"),
        }
    }
}

fn is_rejection<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        || response
            .headers()
            .get(tonic::Status::GRPC_STATUS)
            .is_some_and(|v| v.as_bytes() == b"16")
}

pin_project! {
    /// The response future of [`AuthService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
            refresh: Option<Refresh>,
        },
        Rejected {
            status: StatusCode,
            headers: HeaderMap,
        },
    }
}

impl<F> ResponseFuture<F> {
    fn called(future: F, refresh: Option<Refresh>) -> Self {
        Self {
            kind: Kind::Called { future, refresh },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Called { .. } => "Called",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, refresh } => {
                let mut response = ready!(future.poll(cx))?;
                if let Some(refresh) = refresh.take() {
                    refresh.apply(&mut response);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Rejected { status, headers } => {
                let mut response = Response::new(B::default());
                *response.status_mut() = *status;
                *response.headers_mut() = std::mem::take(headers);
                Poll::Ready(Ok(response))
            }
        }
    }
}
