//! Agents whose every call takes the password (Polykey's): with
//! `SessionBuilder::start_on_password`, a token on the answer to a call made with `Basic`
//! credentials starts the session; and a refresh that brings the token in use again costs no
//! write.

use std::convert::Infallible;
use tower_agent_session::store::TokenStore as _;

use bytes::Bytes;
use http_body_util::Full;
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::{Session, Token};

const BASIC: &str = "Basic OnBhc3N3b3Jk"; // base64(":password")

/// An agent stand-in: a password call is answered with `unlocked`, any other call with
/// `refresh` (and counted in `calls`), as Polykey's agent answers every successful call.
fn agent(
    unlocked: &'static str,
    refresh: &'static str,
    reject_password: bool,
) -> impl tower::Service<
    http::Request<Full<Bytes>>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: http::Request<Full<Bytes>>| async move {
        let credentials = request
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let response = match credentials.as_deref() {
            Some(BASIC) if reject_password => http::Response::builder()
                .status(401)
                .header("www-authenticate", r#"Basic realm="agent""#),
            Some(BASIC) => {
                http::Response::builder().header("authorization", format!("Bearer {unlocked}"))
            }
            _ => http::Response::builder().header("authorization", format!("Bearer {refresh}")),
        };
        Ok::<_, Infallible>(response.body(Full::new(Bytes::new())).unwrap())
    })
}

fn with_password() -> http::Request<Full<Bytes>> {
    http::Request::get("http://agent/")
        .header("authorization", BASIC)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn plain() -> http::Request<Full<Bytes>> {
    http::Request::get("http://agent/")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn token(text: &str) -> Token {
    Token::new(text).unwrap()
}

#[tokio::test]
async fn a_password_call_starts_the_session_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .start_on_password(true)
    .build();
    session.start_with_token(token("old")).await.unwrap();
    let before = session.epoch();
    let response = tower_agent_session::SessionLayer::new(session.clone())
        .layer(agent("unlocked", "refreshed", false))
        .oneshot(with_password())
        .await
        .unwrap();
    assert!(
        response.headers()["authorization"].is_sensitive(),
        "the token is hidden from Debug"
    );
    assert_eq!(session.token(), Some(token("unlocked")));
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("unlocked")),
        "written by the time the call returns"
    );
    assert_ne!(session.epoch(), before, "an explicit change");
}

#[tokio::test]
async fn a_password_call_changes_nothing_by_default_or_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    session.start_with_token(token("old")).await.unwrap();
    let plain_layer = tower_agent_session::SessionLayer::new(session.clone());
    plain_layer
        .layer(agent("unlocked", "refreshed", false))
        .oneshot(with_password())
        .await
        .unwrap();
    assert_eq!(session.token(), Some(token("old")));

    let starting = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .start_on_password(true)
    .build();
    starting.start().await.unwrap();
    let response = tower_agent_session::SessionLayer::new(starting.clone())
        .layer(agent("unlocked", "refreshed", true))
        .oneshot(with_password())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(starting.token(), Some(token("old")));
    assert_eq!(
        starting.file().unwrap().load().unwrap().token,
        Some(token("old"))
    );
}

#[tokio::test]
async fn a_refresh_that_brings_the_token_in_use_costs_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .watch(tower_agent_session::Watch::Off)
    .build();
    session.start_with_token(token("same")).await.unwrap();
    let service = tower_agent_session::SessionLayer::new(session.clone())
        .layer(agent("unused", "same", false));
    for _ in 0..100 {
        service.clone().oneshot(plain()).await.unwrap();
    }
    let stats = session.stats();
    assert_eq!(stats.writes, 0, "{stats:?}");
    assert_eq!(stats.refreshes, 0, "{stats:?}");

    // A new token is written, once.
    let service = tower_agent_session::SessionLayer::new(session.clone())
        .layer(agent("unused", "new", false));
    for _ in 0..10 {
        service.clone().oneshot(plain()).await.unwrap();
    }
    session.flush().await.unwrap();
    assert_eq!(session.stats().writes, 1);
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("new"))
    );
}
