//! Session failures sent after the response headers, in the trailers (as grpc-js agents send
//! every error): re-authentication sees them and replays the call, `Error::from_status_with`
//! reads them, and looking for them never holds up a stream that works nor a call whose request
//! is still streaming.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Server;
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage};
use tower_agent_session::{
    BoxError, Error, Polykey, Session, SessionFailures, SessionLayer, Token,
};
use tower_agent_session_agent::{Agent, SessionManager};

mod common;
use common::{PASSWORD, channel};

/// Only a bound on a hang: a passing run never comes near it.
const HANG: Duration = Duration::from_secs(60);

/// A body fed frame by frame through a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody(rx))
}

/// Turns the agent's trailers-only `UNAUTHENTICATED` into what grpc-js sends: headers that say
/// nothing, then trailers with `grpc-status: 2` and Polykey's `error` JSON.
#[derive(Clone)]
struct LikeGrpcJs<S>(S);

impl<S, B> tower::Service<http::Request<B>> for LikeGrpcJs<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.0.clone();
        let mut inner = std::mem::replace(&mut self.0, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            if response
                .headers()
                .get("grpc-status")
                .map(HeaderValue::as_bytes)
                != Some(b"16")
            {
                return Ok(response);
            }
            let invalid = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("invalid_token"));
            let kind = if invalid {
                "ErrorClientAuthDenied"
            } else {
                "ErrorClientAuthMissing"
            };
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("2"));
            trailers.insert("grpc-message", HeaderValue::from_static("Unknown%20Error"));
            let error = format!(r#"{{"type":"{kind}","data":{{"exitCode":77}}}}"#);
            trailers.insert("error", HeaderValue::from_str(&error).unwrap());
            let (tx, body) = channel_body();
            tx.try_send(Frame::trailers(trailers)).unwrap();
            drop(tx);
            let headers = http::Response::builder()
                .header("content-type", "application/grpc+proto")
                .body(tonic::body::Body::new(body))
                .unwrap();
            Ok(headers)
        })
    }
}

struct GrpcJsAgent {
    address: std::net::SocketAddr,
    manager: SessionManager,
    _stop: oneshot::Sender<()>,
}

async fn start_grpc_js_agent() -> GrpcJsAgent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = Agent::new(manager.clone(), PASSWORD);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .layer(tower::layer::layer_fn(LikeGrpcJs))
            .layer(agent.auth_layer())
            .add_service(agent.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    GrpcJsAgent {
        address,
        manager,
        _stop: stop,
    }
}

fn polykey_session(dir: &std::path::Path) -> Session {
    Session::builder(tower_agent_session::TokenFile::new(dir.join("token")))
        .watch(tower_agent_session::Watch::Off)
        .failures(Polykey)
        .build()
}

#[tokio::test]
async fn failures_in_trailers_are_recovered_and_replayed() {
    let agent = start_grpc_js_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = polykey_session(dir.path());
    let (layer, runs) = common::counting_reauth_layer(agent.address, &session).await;
    let mut client = AgentServiceClient::new(layer.layer(channel(agent.address).await));

    // No token: ErrorClientAuthMissing in the trailers.
    let echo = tokio::time::timeout(
        HANG,
        client.echo(EchoMessage {
            challenge: "after a missing token".into(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(echo.get_ref().challenge, "after a missing token");
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A locked-all token: ErrorClientAuthDenied in the trailers.
    agent.manager.lock_all().unwrap();
    let echo = tokio::time::timeout(
        HANG,
        client.echo(EchoMessage {
            challenge: "after a lock all".into(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(echo.get_ref().challenge, "after a lock all");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    common::assert_file_token_accepted(&agent.manager, &session);
}

#[tokio::test]
async fn the_plain_layer_hands_them_over_for_from_status_with() {
    let agent = start_grpc_js_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = polykey_session(dir.path());
    let mut client = AgentServiceClient::new(
        tower_agent_session::SessionLayer::new(session.clone()).layer(channel(agent.address).await),
    );
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert!(matches!(
        Error::from_status_with(&status, &Polykey),
        Some(Error::TokenNotProvided)
    ));
    assert!(Error::from_status(&status).is_none(), "not an RFC 6750 one");

    session
        .start_with_token(agent.manager.mint().unwrap())
        .await
        .unwrap();
    agent.manager.lock_all().unwrap();
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    let error = Error::from_status_with(&status, &Polykey).unwrap();
    assert!(matches!(error, Error::TokenInvalid));
    assert_eq!(error.exit_code(), 65);
}

// ---- Never held up ----------------------------------------------------------------------

type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A gRPC-looking HTTP/2 server: it answers `/hold` with headers at once, then the frames the
/// test sends through `frames`.
async fn raw_server(frames: mpsc::Receiver<Frame<Bytes>>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let body = Arc::new(std::sync::Mutex::new(Some(ChannelBody(frames))));
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = tower::service_fn(move |_request: http::Request<hyper::body::Incoming>| {
            let body = body.lock().unwrap().take().expect("one call");
            async move {
                Ok::<_, Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(body)
                        .unwrap(),
                )
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .http2_only()
            .serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper_util::service::TowerToHyperService::new(service),
            )
            .await;
    });
    address
}

/// Polykey's failures, looked for in the trailers for as long as it takes: only the request's
/// state can then keep a call from waiting for its first frame.
#[derive(Debug)]
struct Patient;

impl SessionFailures for Patient {
    fn session_failure(&self, status: http::StatusCode, headers: &HeaderMap) -> Option<Error> {
        Polykey.session_failure(status, headers)
    }

    fn trailers_wait(&self) -> Duration {
        Duration::from_secs(3600)
    }
}

async fn reauthenticating_client(
    address: std::net::SocketAddr,
    failures: impl SessionFailures,
    request_body: ClientBody,
) -> Result<http::Response<tower_agent_session::layer::PeekedBody<hyper::body::Incoming>>, BoxError>
{
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .failures(failures)
    .build();
    session
        .start_with_token(Token::new("t").unwrap())
        .await
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<ClientBody>();
    let layer = SessionLayer::new(session)
        .reauthenticate_with(|| async { Err::<Token, _>(std::io::Error::other("not expected")) });
    let request = http::Request::post(format!("http://{address}/hold"))
        .header("content-type", "application/grpc")
        .body(request_body)
        .unwrap();
    layer.layer(client).oneshot(request).await
}

#[tokio::test]
async fn a_stream_whose_first_message_waits_is_handed_over_without_it() {
    let (frames, server_body) = mpsc::channel(4);
    let address = raw_server(server_body).await;
    let request = http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0"))
        .map_err(|never| match never {})
        .boxed_unsync();
    // The server's first message comes only once the client has the response.
    let response = tokio::time::timeout(HANG, reauthenticating_client(address, Polykey, request))
        .await
        .expect("the response waited for a message that waits for it")
        .unwrap();
    frames
        .send(Frame::data(Bytes::from_static(b"\0\0\0\0\x01a")))
        .await
        .unwrap();
    // The stream goes on after the response was handed over.
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), &b"\0\0\0\0\x01a"[..]);
    frames
        .send(Frame::data(Bytes::from_static(b"\0\0\0\0\x01b")))
        .await
        .unwrap();
    let second = body.frame().await.unwrap().unwrap();
    assert_eq!(second.into_data().unwrap(), &b"\0\0\0\0\x01b"[..]);
}

#[tokio::test]
async fn a_call_whose_request_still_streams_is_handed_over_at_its_headers() {
    let (_frames, server_body) = mpsc::channel(4);
    let address = raw_server(server_body).await;
    // The request sends its message only once the response is in, as a bidirectional client
    // that answers the server's greeting does.
    let (request_frames, request_body) = channel_body();
    let request = request_body.map_err(|never| match never {}).boxed_unsync();
    let response = tokio::time::timeout(HANG, reauthenticating_client(address, Patient, request))
        .await
        .expect("the response waited for a request that waits for it")
        .unwrap();
    assert_eq!(response.status(), 200);
    request_frames
        .send(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))
        .await
        .unwrap();
}

// ---- A token beside a failure in the trailers ------------------------------------------

/// A token in the headers of a response whose trailers are a session failure is no refresh: a
/// rejection refreshes nothing, wherever it is said. Taken, it would be the token the call is
/// replayed with (the session holds a token other than the one that failed), so a failing agent
/// or anything between could plant one.
#[tokio::test]
async fn a_token_beside_a_failure_in_the_trailers_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .watch(tower_agent_session::Watch::Off)
    .build();
    session
        .start_with_token(Token::new("stale").unwrap())
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    // Takes only the re-authenticator's token. A refusal says nothing in its headers but a
    // token, and `UNAUTHENTICATED` in its trailers, after the request was read whole.
    let agent = tower::service_fn(move |request: http::Request<ClientBody>| {
        let record = record.clone();
        async move {
            let sent = request.headers()[http::header::AUTHORIZATION].clone();
            record.lock().unwrap().push(sent.clone());
            request.into_body().collect().await.unwrap();
            let (frames, body) = channel_body();
            let mut trailers = HeaderMap::new();
            let mut response = http::Response::new(body);
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            if sent == "Bearer fresh" {
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
            } else {
                headers.insert("authorization", HeaderValue::from_static("Bearer planted"));
                trailers.insert("grpc-status", HeaderValue::from_static("16"));
                trailers.insert(
                    "www-authenticate",
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            frames.send(Frame::trailers(trailers)).await.unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let layer = SessionLayer::new(session.clone())
        .reauthenticate_with(|| async { Ok::<_, BoxError>(Token::new("fresh")?) });
    let request = http::Request::post("http://agent.test/agent.v1.AgentService/Echo")
        .header("content-type", "application/grpc")
        .body(
            http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap();
    let response = tokio::time::timeout(HANG, layer.layer(agent).oneshot(request))
        .await
        .unwrap()
        .unwrap();
    let trailers = response.into_body().collect().await.unwrap();
    assert_eq!(trailers.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(*seen.lock().unwrap(), ["Bearer stale", "Bearer fresh"]);
    assert_eq!(session.token(), Some(Token::new("fresh").unwrap()));
    assert_eq!(session.stats().refreshes, 0);
}
