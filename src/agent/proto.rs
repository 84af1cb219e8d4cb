//! The `agent.v1` gRPC contract: its messages, a client and a server, written by hand in the
//! shape `tonic-build` generates (no `protoc` needed).
//!
//! ```proto
//! syntax = "proto3";
//! package agent.v1;
//! service AgentService {
//!   rpc SessionUnlock(PasswordMessage) returns (SessionTokenMessage); // no token needed
//!   rpc SessionsLockAll(EmptyMessage) returns (EmptyMessage);        // rotates the key
//!   rpc AgentStatus(EmptyMessage) returns (StatusMessage);           // status = "LIVE"
//!   rpc Echo(EchoMessage) returns (EchoMessage);
//! }
//! message PasswordMessage { string password = 1; }
//! message SessionTokenMessage { string token = 1; }
//! message EmptyMessage {}
//! message StatusMessage { string status = 1; }
//! message EchoMessage { string challenge = 1; }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::{GrpcMethod, IntoRequest, Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The fully qualified service name, `agent.v1.AgentService`.
pub const SERVICE_NAME: &str = "agent.v1.AgentService";
/// The HTTP path of `SessionUnlock`.
pub const SESSION_UNLOCK_PATH: &str = "/agent.v1.AgentService/SessionUnlock";
/// The HTTP path of `SessionsLockAll`.
pub const SESSIONS_LOCK_ALL_PATH: &str = "/agent.v1.AgentService/SessionsLockAll";
/// The HTTP path of `AgentStatus`.
pub const AGENT_STATUS_PATH: &str = "/agent.v1.AgentService/AgentStatus";
/// The HTTP path of `Echo`.
pub const ECHO_PATH: &str = "/agent.v1.AgentService/Echo";

/// `SessionUnlock`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PasswordMessage {
    /// The agent's password.
    #[prost(string, tag = "1")]
    pub password: String,
}

/// `SessionUnlock`'s answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionTokenMessage {
    /// The new session token.
    #[prost(string, tag = "1")]
    pub token: String,
}

/// No content.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct EmptyMessage {}

/// `AgentStatus`'s answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusMessage {
    /// `"LIVE"` when the agent is up.
    #[prost(string, tag = "1")]
    pub status: String,
}

/// `Echo`'s request and answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// Anything; the agent sends it back.
    #[prost(string, tag = "1")]
    pub challenge: String,
}

/// A client of `agent.v1.AgentService` over any gRPC transport (a tonic `Channel`, or a tower
/// stack over one).
#[derive(Debug, Clone)]
pub struct AgentServiceClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> AgentServiceClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    /// A client sending its calls through `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// A client whose requests carry `origin`'s scheme and authority (and path prefix).
    pub fn with_origin(inner: T, origin: http::Uri) -> Self {
        Self {
            inner: tonic::client::Grpc::with_origin(inner, origin),
        }
    }

    /// A client whose requests pass through `interceptor` first, as generated tonic clients
    /// offer.
    pub fn with_interceptor<F>(
        inner: T,
        interceptor: F,
    ) -> AgentServiceClient<tonic::service::interceptor::InterceptedService<T, F>>
    where
        F: tonic::service::Interceptor,
        T: tower_service::Service<
                http::Request<Body>,
                Response = http::Response<<T as tonic::client::GrpcService<Body>>::ResponseBody>,
            >,
        <T as tower_service::Service<http::Request<Body>>>::Error: Into<BoxError>,
    {
        AgentServiceClient::new(tonic::service::interceptor::InterceptedService::new(
            inner,
            interceptor,
        ))
    }

    /// `SessionUnlock`: trades the password for a session token. Needs no token.
    pub async fn session_unlock(
        &mut self,
        request: impl IntoRequest<PasswordMessage>,
    ) -> Result<Response<SessionTokenMessage>, Status> {
        self.unary(request.into_request(), SESSION_UNLOCK_PATH)
            .await
    }

    /// `SessionsLockAll`: ends every session.
    pub async fn sessions_lock_all(
        &mut self,
        request: impl IntoRequest<EmptyMessage>,
    ) -> Result<Response<EmptyMessage>, Status> {
        self.unary(request.into_request(), SESSIONS_LOCK_ALL_PATH)
            .await
    }

    /// `AgentStatus`: `"LIVE"` when the agent is up.
    pub async fn agent_status(
        &mut self,
        request: impl IntoRequest<EmptyMessage>,
    ) -> Result<Response<StatusMessage>, Status> {
        self.unary(request.into_request(), AGENT_STATUS_PATH).await
    }

    /// `Echo`: sends the challenge back.
    pub async fn echo(
        &mut self,
        request: impl IntoRequest<EchoMessage>,
    ) -> Result<Response<EchoMessage>, Status> {
        self.unary(request.into_request(), ECHO_PATH).await
    }

    async fn unary<M, R>(
        &mut self,
        mut request: Request<M>,
        path: &'static str,
    ) -> Result<Response<R>, Status>
    where
        M: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner.ready().await.map_err(|e| {
            Status::unknown(format!(
                "Service was not ready: {}",
                Into::<BoxError>::into(e)
            ))
        })?;
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE_NAME, method_name(path)));
        let codec = ProstCodec::<M, R>::default();
        self.inner
            .unary(request, PathAndQuery::from_static(path), codec)
            .await
    }
}

fn method_name(path: &'static str) -> &'static str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The server side of `agent.v1.AgentService`: implement this and serve it with
/// [`AgentServiceServer`]. [`Agent`](super::Agent) is the ready implementation.
#[tonic::async_trait]
pub trait AgentService: Send + Sync + 'static {
    /// `SessionUnlock`: trades the password for a session token.
    async fn session_unlock(
        &self,
        request: Request<PasswordMessage>,
    ) -> Result<Response<SessionTokenMessage>, Status>;

    /// `SessionsLockAll`: ends every session.
    async fn sessions_lock_all(
        &self,
        request: Request<EmptyMessage>,
    ) -> Result<Response<EmptyMessage>, Status>;

    /// `AgentStatus`: `"LIVE"` when the agent is up.
    async fn agent_status(
        &self,
        request: Request<EmptyMessage>,
    ) -> Result<Response<StatusMessage>, Status>;

    /// `Echo`: sends the challenge back.
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status>;
}

/// Serves an [`AgentService`] as a tower service of `http::Request`s, routing on the path;
/// unknown paths get `UNIMPLEMENTED`.
pub struct AgentServiceServer<T> {
    inner: Arc<T>,
}

impl<T> AgentServiceServer<T> {
    /// Serves `inner`.
    pub fn new(inner: T) -> Self {
        Self::from_arc(Arc::new(inner))
    }

    /// Serves a shared `inner`.
    pub fn from_arc(inner: Arc<T>) -> Self {
        Self { inner }
    }
}

impl<T> Clone for AgentServiceServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for AgentServiceServer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentServiceServer")
            .field("inner", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> tonic::server::NamedService for AgentServiceServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<T, B> Service<http::Request<B>> for AgentServiceServer<T>
where
    T: AgentService,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        match request.uri().path() {
            SESSION_UNLOCK_PATH => unary(inner, request, |agent: Arc<T>, r| async move {
                agent.session_unlock(r).await
            }),
            SESSIONS_LOCK_ALL_PATH => unary(inner, request, |agent: Arc<T>, r| async move {
                agent.sessions_lock_all(r).await
            }),
            AGENT_STATUS_PATH => unary(inner, request, |agent: Arc<T>, r| async move {
                agent.agent_status(r).await
            }),
            ECHO_PATH => unary(inner, request, |agent: Arc<T>, r| async move {
                agent.echo(r).await
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

/// Decodes one `M`, runs `method` on it, encodes its answer: one unary call.
fn unary<T, M, R, B, F, Fut>(
    inner: Arc<T>,
    request: http::Request<B>,
    method: F,
) -> BoxFuture<http::Response<Body>, Infallible>
where
    T: Send + Sync + 'static,
    M: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
    F: Fn(Arc<T>, Request<M>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    let handler = Handler(move |r| method(Arc::clone(&inner), r));
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<R, M>::default());
        Ok(grpc.unary(handler, request).await)
    })
}

/// A closure as the tower service `tonic::server::Grpc::unary` wants.
struct Handler<F>(F);

impl<M, R, F, Fut> Service<Request<M>> for Handler<F>
where
    F: FnMut(Request<M>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    type Response = Response<R>;
    type Error = Status;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<M>) -> Self::Future {
        (self.0)(request)
    }
}
