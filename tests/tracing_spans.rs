//! The session's events belong to the call that caused them: a refresh's write, made on a
//! blocking thread after the call's response, is logged inside that call's `session_call` span,
//! with the call's path and none of its credentials.
//!
//! One global subscriber for this test binary (the writer's thread is not the test's, so a
//! thread-local default would not see its events), writing plain text into a buffer.

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use tower_agent_session::store::TokenStore as _;

use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt as _;
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::{AgentTokens, Session, SessionLayer, Token, TokenFile, Watch};

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn log() -> Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        log
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_write_is_logged_in_its_calls_span() {
    let log = log();
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(TokenFile::in_dir(dir.path()))
        .watch(Watch::Off)
        // The call waits for its write (however slow a loaded disk is): the write's events are
        // in the log when it returns.
        .agent_tokens(AgentTokens::RevokedOnRefresh)
        .call_wait(std::time::Duration::from_secs(3600))
        .build();
    session
        .start_with_token(Token::new("first.secret").unwrap())
        .await
        .unwrap();
    let agent = tower::service_fn(|_: Request<()>| async {
        let mut response = Response::new(());
        response.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer second.secret"),
        );
        Ok::<_, Infallible>(response)
    });
    let request = Request::builder()
        .uri("http://agent.test/agent.v1.AgentService/Echo")
        .body(())
        .unwrap();
    SessionLayer::new(session.clone())
        .layer(agent)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(Token::new("second.secret").unwrap())
    );

    let text = log.text();
    let written = text
        .lines()
        .find(|line| line.contains("refreshed token written"))
        .unwrap_or_else(|| panic!("no write logged:\n{text}"));
    assert!(
        written
            .contains(r#"session_call{path="/agent.v1.AgentService/Echo" credentials="session""#),
        "the write is not in its call's span: {written}"
    );
    assert!(!text.contains("secret"), "a token reached the log:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_is_logged_in_its_calls_span() {
    type Body =
        http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, tower_agent_session::BoxError>;
    let log = log();
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(TokenFile::in_dir(dir.path()))
        .watch(Watch::Off)
        .build();
    session
        .start_with_token(Token::new("stale.secret").unwrap())
        .await
        .unwrap();
    // An agent that takes only the re-authenticator's token, and refuses the rest as RFC 6750
    // says.
    let agent = tower::service_fn(|request: Request<Body>| async move {
        let accepted = request.headers()[header::AUTHORIZATION] == "Bearer fresh.secret";
        let mut response = Response::new(http_body_util::Empty::<bytes::Bytes>::new());
        if !accepted {
            *response.status_mut() = http::StatusCode::UNAUTHORIZED;
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
        }
        Ok::<_, Infallible>(response)
    });
    let unlock = || async { Ok::<_, tower_agent_session::BoxError>(Token::new("fresh.secret")?) };
    let body: Body = http_body_util::BodyExt::boxed_unsync(
        http_body_util::Empty::<bytes::Bytes>::new().map_err(|never| match never {}),
    );
    let request = Request::builder()
        .uri("http://agent.test/agent.v1.AgentService/AgentStatus")
        .body(body)
        .unwrap();
    let response = SessionLayer::new(session.clone())
        .reauthenticate_with(unlock)
        .layer(agent)
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "recovered and replayed");

    let text = log.text();
    let recovering = text
        .lines()
        .find(|line| line.contains("re-authenticating"))
        .unwrap_or_else(|| panic!("no recovery logged:\n{text}"));
    assert!(
        recovering.contains(r#"session_reauth{path="/agent.v1.AgentService/AgentStatus"}"#),
        "the recovery is not in its call's span: {recovering}"
    );
    assert!(!text.contains("secret"), "a token reached the log:\n{text}");
}
