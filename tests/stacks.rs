//! The one layer on every stack a user has, each over loopback against the crate's agent:
//! tonic (lazy and balanced channels, tonic's interceptor on top), hyper-util's client over
//! HTTP/1.1 and HTTP/2, and reqwest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tower::{Service, ServiceBuilder, ServiceExt as _};
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage};
use tower_agent_session::{Error, Session, SessionLayer, Token};
use tower_agent_session_agent::{
    Agent, HTTP_ECHO_PATH, HTTP_LOCK_ALL_PATH, HTTP_STATUS_PATH, HTTP_UNLOCK_PATH, SessionManager,
};

mod common;
use common::{PASSWORD, quiet_session, start_agent};

/// An agent serving the HTTP calls; dropping it stops the server.
struct HttpAgent {
    address: SocketAddr,
    manager: SessionManager,
    _stop: oneshot::Sender<()>,
}

async fn start_http_agent() -> HttpAgent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Agent::new(manager.clone(), PASSWORD).serve_http(listener, async {
            let _ = stopped.await;
        }),
    );
    HttpAgent {
        address,
        manager,
        _stop: stop,
    }
}

async fn status_with<S>(client: &mut AgentServiceClient<S>) -> Result<String, tonic::Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<tower_agent_session::BoxError>,
    S::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<tower_agent_session::BoxError> + Send,
{
    Ok(client
        .agent_status(EmptyMessage {})
        .await?
        .into_inner()
        .status)
}

#[tokio::test]
async fn tonic_lazy_channel() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session
        .start_with_token(agent.manager.mint().unwrap())
        .await
        .unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", agent.address))
        .unwrap()
        .connect_lazy();
    let mut client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel),
    );
    assert_eq!(status_with(&mut client).await.unwrap(), "LIVE");
    assert_eq!(session.stats().refreshes, 1);
}

#[tokio::test]
async fn tonic_balanced_channel() {
    // Two agents with one key: either accepts the other's tokens.
    let first = start_agent().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = listener.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Agent::new(first.manager.clone(), PASSWORD).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    let endpoints =
        [first.address, second].map(|a| Endpoint::from_shared(format!("http://{a}")).unwrap());
    let channel = Channel::balance_list(endpoints.into_iter());
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session
        .start_with_token(first.manager.mint().unwrap())
        .await
        .unwrap();
    let mut client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel),
    );
    for _ in 0..10 {
        assert_eq!(status_with(&mut client).await.unwrap(), "LIVE");
    }
    // One refresh a second from the agent: the calls of one second bring the same token.
    assert!((1..=10).contains(&session.stats().refreshes));
    common::assert_file_token_accepted(&first.manager, &session);
}

#[tokio::test]
async fn tonic_interceptor_on_top_of_the_layer() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session
        .start_with_token(agent.manager.mint().unwrap())
        .await
        .unwrap();
    let intercepted = Arc::new(AtomicUsize::new(0));
    let seen = intercepted.clone();
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(common::channel(agent.address).await);
    let mut client =
        AgentServiceClient::with_interceptor(service, move |mut request: tonic::Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            request
                .metadata_mut()
                .insert("x-request-id", "42".parse().unwrap());
            Ok(request)
        });
    let echo = client
        .echo(EchoMessage {
            challenge: "through both".into(),
        })
        .await
        .unwrap();
    assert_eq!(echo.get_ref().challenge, "through both");
    assert_eq!(intercepted.load(Ordering::SeqCst), 1);
    assert_eq!(session.stats().refreshes, 1);
}

#[tokio::test]
async fn tonic_interceptor_credentials_win_over_the_session() {
    // An interceptor that sets its own `authorization` (say, a service account) wins.
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session
        .start_with_token(Token::new("not-accepted").unwrap())
        .await
        .unwrap();
    let own = agent.manager.mint().unwrap();
    let header = format!("Bearer {}", own.expose());
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(common::channel(agent.address).await);
    let mut client =
        AgentServiceClient::with_interceptor(service, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
            Ok(request)
        });
    assert_eq!(status_with(&mut client).await.unwrap(), "LIVE");
    assert_eq!(session.token(), Some(Token::new("not-accepted").unwrap()));
}

/// The HTTP flow every HTTP client must get through: refused without a token, unlocked, calls
/// that refresh, refused after lock-all.
async fn http_flow<S, B>(mut client: S, plain: S, agent: &HttpAgent, session: &Session)
where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let base = format!("http://{}", agent.address);
    let get = |path: &str| {
        http::Request::get(format!("{base}{path}"))
            .body(Full::default())
            .unwrap()
    };
    let post = |path: &str, body: &'static str| {
        http::Request::post(format!("{base}{path}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };

    let response = client
        .ready()
        .await
        .unwrap()
        .call(get(HTTP_STATUS_PATH))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenNotProvided)
    ));

    // Unlock without the layer, start the session with the token.
    let response = plain
        .clone()
        .ready()
        .await
        .unwrap()
        .call(post(HTTP_UNLOCK_PATH, PASSWORD))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let token = Token::new(std::str::from_utf8(&body).unwrap()).unwrap();
    session.start_with_token(token.clone()).await.unwrap();

    let response = client
        .ready()
        .await
        .unwrap()
        .call(get(HTTP_STATUS_PATH))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(session.token(), Some(token), "refreshed");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"LIVE");
    let response = client
        .ready()
        .await
        .unwrap()
        .call(post(HTTP_ECHO_PATH, "hello"))
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    common::assert_file_token_accepted(&agent.manager, session);

    let response = client
        .ready()
        .await
        .unwrap()
        .call(post(HTTP_LOCK_ALL_PATH, ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.headers().get("authorization").is_none());
    let response = client
        .ready()
        .await
        .unwrap()
        .call(get(HTTP_STATUS_PATH))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenInvalid)
    ));
}

/// hyper-util's client wrapped in the layer, over HTTP/1.1 or HTTP/2 (prior knowledge).
async fn hyper_flow(http2_only: bool) {
    let agent = start_http_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start().await.unwrap();
    let hyper = Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(hyper.clone());
    let plain = ServiceBuilder::new()
        .layer(SessionLayer::new(Session::new(
            tower_agent_session::TokenFile::new(dir.path().join("unused")),
        )))
        .service(hyper);
    http_flow(client, plain, &agent, &session).await;
}

#[tokio::test]
async fn hyper_client_over_http1() {
    hyper_flow(false).await;
}

#[tokio::test]
async fn hyper_client_over_http2() {
    hyper_flow(true).await;
}

#[tokio::test]
async fn reqwest_client() {
    let agent = start_http_agent().await;
    let base = format!("http://{}", agent.address);
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start().await.unwrap();
    let http = reqwest::Client::new();
    let mut client = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(http.clone());
    let status = http
        .get(format!("{base}{HTTP_STATUS_PATH}"))
        .build()
        .unwrap();

    let response = client.ready().await.unwrap().call(status).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenNotProvided)
    ));

    let unlocked = http
        .post(format!("{base}{HTTP_UNLOCK_PATH}"))
        .body(PASSWORD)
        .send()
        .await
        .unwrap();
    let token = Token::new(unlocked.text().await.unwrap()).unwrap();
    session.start_with_token(token.clone()).await.unwrap();

    let status = http
        .get(format!("{base}{HTTP_STATUS_PATH}"))
        .build()
        .unwrap();
    let response = client.ready().await.unwrap().call(status).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "LIVE");
    assert_ne!(session.token(), Some(token));
    common::assert_file_token_accepted(&agent.manager, &session);

    agent.manager.lock_all().unwrap();
    let status = http
        .get(format!("{base}{HTTP_STATUS_PATH}"))
        .build()
        .unwrap();
    let response = client.ready().await.unwrap().call(status).await.unwrap();
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenInvalid)
    ));
}
