//! [`HttpAgent`]: the agent's calls over plain HTTP, for clients that do not speak gRPC
//! (hyper, reqwest, curl). Same tokens, same RFC 6750 rejections, through the same
//! [`AuthLayer`].
//!
//! | call | request | response |
//! |---|---|---|
//! | [`HTTP_UNLOCK_PATH`] | `POST`, the password as the body | `200`, the token as the body and in `authorization`; `403` "Incorrect password" |
//! | [`HTTP_LOCK_ALL_PATH`] | `POST` | `204`, no refreshed token |
//! | [`HTTP_STATUS_PATH`] | `GET` | `200`, `LIVE` |
//! | [`HTTP_ECHO_PATH`] | `POST`, any body | `200`, the same body |

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use tokio::net::TcpListener;
use tower_service::Service;

use super::auth::{AuthLayer, NoRefresh};
use super::server::{Agent, LIVE};
use tower_agent_session::BoxError;

/// Unlocks a session: the password in, a token out.
pub const HTTP_UNLOCK_PATH: &str = "/v1/session/unlock";
/// Invalidates every session.
pub const HTTP_LOCK_ALL_PATH: &str = "/v1/sessions/lock-all";
/// Answers `LIVE`.
pub const HTTP_STATUS_PATH: &str = "/v1/status";
/// Sends the body back.
pub const HTTP_ECHO_PATH: &str = "/v1/echo";

/// How long to wait after a failed `accept` before the next: long enough not to spin on a
/// persistent error (no descriptors left), short enough to go unnoticed otherwise.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The largest request body read: a password or an echo, never more.
const MAX_BODY: usize = 64 * 1024;

/// The agent's calls over HTTP, without the token checks: put [`HttpAgent::auth_layer`] in
/// front of it, or serve both with [`Agent::serve_http`].
#[derive(Debug, Clone)]
pub struct HttpAgent {
    agent: Agent,
}

impl HttpAgent {
    /// The HTTP calls of `agent`.
    pub fn new(agent: Agent) -> Self {
        Self { agent }
    }

    /// The [`AuthLayer`] these calls need: [`HTTP_UNLOCK_PATH`] without a token,
    /// [`HTTP_LOCK_ALL_PATH`] without a refresh.
    pub fn auth_layer(&self) -> AuthLayer {
        AuthLayer::new(self.agent.manager().clone())
            .allow_path(HTTP_UNLOCK_PATH)
            .no_refresh_path(HTTP_LOCK_ALL_PATH)
    }

    async fn answer<B>(self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        match (parts.method, parts.uri.path()) {
            (Method::POST, HTTP_UNLOCK_PATH) => self.unlock(&body),
            (Method::POST, HTTP_LOCK_ALL_PATH) => self.lock_all().await,
            (Method::GET, HTTP_STATUS_PATH) => plain(StatusCode::OK, LIVE),
            (Method::POST, HTTP_ECHO_PATH) => Response::new(Full::new(body)),
            (_, HTTP_UNLOCK_PATH | HTTP_LOCK_ALL_PATH | HTTP_STATUS_PATH | HTTP_ECHO_PATH) => {
                plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => plain(StatusCode::NOT_FOUND, "not found"),
        }
    }

    fn unlock(&self, body: &[u8]) -> Response<Full<Bytes>> {
        let password = body.strip_suffix(b"\n").unwrap_or(body);
        let token = match self.agent.unlock(password) {
            Ok(token) => token,
            Err(status) if status.code() == tonic::Code::PermissionDenied => {
                return plain(StatusCode::FORBIDDEN, status.message());
            }
            Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot mint a token"),
        };
        let mut response = plain(StatusCode::OK, token.expose());
        let headers = response.headers_mut();
        headers.insert(header::AUTHORIZATION, token.header_value());
        // A response that carries a token must never be cached (RFC 6749, section 5.1).
        headers.insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        response
    }

    async fn lock_all(&self) -> Response<Full<Bytes>> {
        let mut response = match self.agent.lock_all().await {
            Ok(()) => {
                let mut response = Response::new(Full::default());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            Err(status) => plain(StatusCode::INTERNAL_SERVER_ERROR, status.message()),
        };
        response.extensions_mut().insert(NoRefresh);
        response
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl<B> Service<Request<B>> for HttpAgent
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.answer(request).await) })
    }
}

impl Agent {
    /// The agent's calls over HTTP (see [`HttpAgent`]).
    pub fn http_service(self) -> HttpAgent {
        HttpAgent::new(self)
    }

    /// Serves the agent's HTTP calls, behind their [`AuthLayer`], on `listener` until
    /// `shutdown` completes: HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
    pub async fn serve_http(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let http = self.http_service();
        let service = tower_layer::Layer::layer(&http.auth_layer(), http);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => return Ok(()),
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, a connection reset before it was accepted: the
                    // listener is still good. Pause so a persistent error does not spin.
                    tracing::warn!(%error, "cannot accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = builder.serve_connection(io, service).await {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
            });
        }
    }
}
