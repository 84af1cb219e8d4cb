//! The agent behind its `AuthLayer`: over a real tonic server on 127.0.0.1, and over a plain
//! HTTP service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request, Status};
use tower::{ServiceBuilder, ServiceExt as _};
use tower_agent_session::proto::{
    AgentServiceClient, ECHO_PATH, EchoMessage, EmptyMessage, PasswordMessage, SESSION_UNLOCK_PATH,
    SESSIONS_LOCK_ALL_PATH,
};
use tower_agent_session::{Error, Token};
use tower_agent_session_agent::{Agent, AuthLayer, NoRefresh, SessionManager};

const PASSWORD: &str = "correct horse battery staple";

/// A running agent; dropping it stops the server.
struct Running {
    address: SocketAddr,
    manager: SessionManager,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = Agent::new(manager.clone(), PASSWORD);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(agent.serve(listener, async {
        let _ = stopped.await;
    }));
    Running {
        address,
        manager,
        _stop: stop,
    }
}

async fn connect(address: SocketAddr) -> AgentServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AgentServiceClient::new(channel)
}

fn with_authorization<M>(message: M, value: &str) -> Request<M> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

fn bearer<M>(message: M, token: &str) -> Request<M> {
    with_authorization(message, &format!("Bearer {token}"))
}

fn metadata_token<T>(response: &tonic::Response<T>) -> Option<String> {
    let value = response.metadata().get("authorization")?.to_str().unwrap();
    Some(value.strip_prefix("Bearer ").unwrap().to_owned())
}

fn www_authenticate(status: &Status) -> String {
    status
        .metadata()
        .get("www-authenticate")
        .expect("a challenge")
        .to_str()
        .unwrap()
        .to_owned()
}

async fn unlock(client: &mut AgentServiceClient<Channel>) -> String {
    let response = client
        .session_unlock(PasswordMessage {
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    response.into_inner().token
}

#[tokio::test]
async fn a_call_without_a_token_is_unauthenticated() {
    let agent = start().await;
    let mut client = connect(agent.address).await;

    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE
    );
    assert_eq!(www_authenticate(&status), r#"Bearer realm="agent""#);
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::TokenNotProvided)
    ));

    // Lock-all needs a session too; a scheme other than Bearer is no token at all.
    let status = client.sessions_lock_all(EmptyMessage {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let basic = with_authorization(EmptyMessage {}, "Basic dXNlcjpwYXNz");
    let status = client.agent_status(basic).await.unwrap_err();
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::TokenNotProvided)
    ));
}

#[tokio::test]
async fn a_wrong_password_is_permission_denied_and_mints_nothing() {
    let agent = start().await;
    let mut client = connect(agent.address).await;

    let status = client
        .session_unlock(PasswordMessage {
            password: "tr0ub4dor&3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "Incorrect password");
    assert!(status.metadata().get("authorization").is_none());
    assert!(Error::from_status(&status).is_none());
}

#[tokio::test]
async fn unlock_then_every_call_refreshes_the_token() {
    let agent = start().await;
    let mut client = connect(agent.address).await;

    let response = client
        .session_unlock(PasswordMessage {
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    let token = response.get_ref().token.clone();
    assert_eq!(metadata_token(&response).as_deref(), Some(token.as_str()));
    assert_eq!(agent.manager.verify(&Token::new(&*token).unwrap()), Ok(()));

    let status = client
        .agent_status(bearer(EmptyMessage {}, &token))
        .await
        .unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    let refreshed = metadata_token(&status).expect("a refreshed token");
    assert_ne!(refreshed, token);
    assert_eq!(
        agent.manager.verify(&Token::new(&*refreshed).unwrap()),
        Ok(())
    );

    let echo = client
        .echo(bearer(
            EchoMessage {
                challenge: "ping ✓".into(),
            },
            &refreshed,
        ))
        .await
        .unwrap();
    assert_eq!(echo.get_ref().challenge, "ping ✓");
    assert!(metadata_token(&echo).is_some());
}

#[tokio::test]
async fn lock_all_ends_every_session() {
    let agent = start().await;
    let mut client = connect(agent.address).await;
    let token = unlock(&mut client).await;
    let refreshed = metadata_token(
        &client
            .agent_status(bearer(EmptyMessage {}, &token))
            .await
            .unwrap(),
    )
    .unwrap();

    let locked = client
        .sessions_lock_all(bearer(EmptyMessage {}, &refreshed))
        .await
        .unwrap();
    assert!(locked.metadata().get("authorization").is_none());

    for old in [&token, &refreshed] {
        let status = client
            .agent_status(bearer(EmptyMessage {}, old))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            status.message(),
            tower_agent_session::Error::TOKEN_INVALID_MESSAGE
        );
        let challenge = www_authenticate(&status);
        assert!(
            challenge.starts_with(r#"Bearer realm="agent""#),
            "{challenge}"
        );
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        assert!(matches!(
            Error::from_status(&status),
            Some(Error::TokenInvalid)
        ));
    }

    // A new unlock starts a new session.
    let fresh = unlock(&mut client).await;
    let status = client
        .agent_status(bearer(EmptyMessage {}, &fresh))
        .await
        .unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
}

#[tokio::test]
async fn an_expired_token_is_invalid() {
    let agent = start().await;
    let mut client = connect(agent.address).await;
    let expired = agent
        .manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();

    let status = client
        .agent_status(bearer(EmptyMessage {}, expired.expose()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        www_authenticate(&status).contains(r#"error_description="token expired""#),
        "{}",
        www_authenticate(&status)
    );
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::TokenInvalid)
    ));
}

#[tokio::test]
async fn the_legacy_and_lowercase_forms_are_accepted() {
    let agent = start().await;
    let mut client = connect(agent.address).await;
    let token = unlock(&mut client).await;

    for form in [format!("Bearer: {token}"), format!("bearer {token}")] {
        let status = client
            .agent_status(with_authorization(EmptyMessage {}, &form))
            .await
            .unwrap();
        assert_eq!(status.get_ref().status, "LIVE", "{form}");
        assert!(metadata_token(&status).is_some());
    }
}

/// The layer as the tonic router meets it, and the server's answer to an unknown method.
#[tokio::test]
async fn works_as_a_layer_on_a_tonic_router() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = Agent::new(manager.clone(), PASSWORD);
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .layer(
                AuthLayer::new(manager.clone())
                    .realm("test realm")
                    .allow_path(SESSION_UNLOCK_PATH)
                    .no_refresh_path(ECHO_PATH),
            )
            .add_service(agent.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let mut client = connect(address).await;

    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert_eq!(www_authenticate(&status), r#"Bearer realm="test realm""#);

    let token = unlock(&mut client).await;
    let echo = client
        .echo(bearer(
            EchoMessage {
                challenge: "x".into(),
            },
            &token,
        ))
        .await
        .unwrap();
    assert!(metadata_token(&echo).is_none(), "no-refresh path");

    // An unknown method of the service: checked by the layer first, then UNIMPLEMENTED.
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let path = http::uri::PathAndQuery::from_static("/agent.v1.AgentService/Nope");
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, EmptyMessage, _>(
            bearer(EmptyMessage {}, &token),
            path.clone(),
            tonic_prost::ProstCodec::<EmptyMessage, EmptyMessage>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, EmptyMessage, _>(
            Request::new(EmptyMessage {}),
            path,
            tonic_prost::ProstCodec::<EmptyMessage, EmptyMessage>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

/// What the plain HTTP service behind the layer does, by path.
fn counting_service(
    manager: SessionManager,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    http::Request<String>,
    Response = http::Response<String>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .layer(
            AuthLayer::new(manager.clone())
                .allow_path("/open")
                .no_refresh_path("/quiet"),
        )
        .service_fn(move |request: http::Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let manager = manager.clone();
            async move {
                let mut response = http::Response::new(String::from("inner"));
                match request.uri().path() {
                    "/marked" => {
                        response.extensions_mut().insert(NoRefresh);
                    }
                    "/own" => {
                        response.headers_mut().insert(
                            "authorization",
                            http::HeaderValue::from_static("Bearer mine"),
                        );
                    }
                    "/lock" => manager.lock_all().unwrap(),
                    "/reject" => *response.status_mut() = http::StatusCode::UNAUTHORIZED,
                    _ => {}
                }
                Ok::<_, Infallible>(response)
            }
        })
}

fn http_request(path: &str, headers: &[(&str, &str)]) -> http::Request<String> {
    let mut builder = http::Request::builder().uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(String::new()).unwrap()
}

#[tokio::test]
async fn over_plain_http_rejections_are_401_and_never_reach_the_service() {
    let manager = SessionManager::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = counting_service(manager.clone(), Arc::clone(&calls));
    let expired = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let expired = format!("Bearer {}", expired.expose());

    // Request headers, and the `error_description` expected (none: no token was sent).
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: [Case; 5] = [
        (&[], None),
        (&[("authorization", "Basic dXNlcjpwYXNz")], None),
        (
            &[("authorization", "Bearer not-a-jwt")],
            Some("token malformed"),
        ),
        (&[("authorization", "Bearer a b")], Some("token malformed")),
        (&[("authorization", &expired)], Some("token expired")),
    ];
    for (headers, description) in cases {
        let response = service
            .clone()
            .oneshot(http_request("/status", headers))
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{headers:?}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        match description {
            None => {
                assert_eq!(challenge, r#"Bearer realm="agent""#);
                assert!(matches!(
                    Error::from_response(&response),
                    Some(Error::TokenNotProvided)
                ));
            }
            Some(description) => {
                assert_eq!(
                    challenge,
                    format!(
                        r#"Bearer realm="agent", error="invalid_token", error_description="{description}""#
                    )
                );
                assert!(matches!(
                    Error::from_response(&response),
                    Some(Error::TokenInvalid)
                ));
            }
        }
        assert!(response.headers().get("authorization").is_none());
        assert!(response.body().is_empty());
    }

    // The same, asked as gRPC: a trailers-only UNAUTHENTICATED.
    let response = service
        .clone()
        .oneshot(http_request(
            "/status",
            &[("content-type", "application/grpc+proto")],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "16");
    assert_eq!(
        response.headers()["grpc-message"],
        "JWT%20Token%20not%20provided%20in%20metadata"
    );
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenNotProvided)
    ));

    assert_eq!(calls.load(Ordering::SeqCst), 0, "the service was called");
}

#[tokio::test]
async fn over_plain_http_a_valid_token_is_refreshed_unless_told_not_to() {
    let manager = SessionManager::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = counting_service(manager.clone(), Arc::clone(&calls));
    let token = manager.mint().unwrap();
    let authorization = format!("Bearer {}", token.expose());
    let signed = [("authorization", authorization.as_str())];

    let response = service
        .clone()
        .oneshot(http_request("/status", &signed))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), "inner");
    let header = &response.headers()["authorization"];
    assert!(header.is_sensitive());
    let refreshed = Token::new(header.to_str().unwrap().strip_prefix("Bearer ").unwrap()).unwrap();
    assert_ne!(refreshed, token);
    assert_eq!(manager.verify(&refreshed), Ok(()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Allowed without a token, and passed on untouched.
    let response = service
        .clone()
        .oneshot(http_request("/open", &[]))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("authorization").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    for quiet in ["/quiet", "/marked", "/reject"] {
        let response = service
            .clone()
            .oneshot(http_request(quiet, &signed))
            .await
            .unwrap();
        assert!(response.headers().get("authorization").is_none(), "{quiet}");
    }

    let response = service
        .clone()
        .oneshot(http_request("/own", &signed))
        .await
        .unwrap();
    let values: Vec<_> = response.headers().get_all("authorization").iter().collect();
    assert_eq!(values, ["Bearer mine"]);

    // A lock-all during the call: no token that would outlive it.
    let response = service
        .clone()
        .oneshot(http_request("/lock", &signed))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("authorization").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 7);

    let response = service
        .oneshot(http_request("/status", &signed))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(calls.load(Ordering::SeqCst), 7);
}

#[test]
fn the_paths_are_the_contract() {
    assert_eq!(SESSION_UNLOCK_PATH, "/agent.v1.AgentService/SessionUnlock");
    assert_eq!(
        SESSIONS_LOCK_ALL_PATH,
        "/agent.v1.AgentService/SessionsLockAll"
    );
    assert_eq!(ECHO_PATH, "/agent.v1.AgentService/Echo");
}
