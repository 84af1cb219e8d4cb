//! The session at its edges: a corrupt session file, an executor other than Tokio, a client
//! clock ahead of the agent's, calls made through a tonic interceptor, a write that fails after
//! its rename, and a re-authentication that fails.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::proto::{AgentServiceClient, EmptyMessage};
use tower_agent_session::{
    BoxError, Error, Session, SessionLayer, Token, Watch, store::MemoryStore, store::Stored,
    store::Swap, store::TokenStore, store::Version,
};
use tower_agent_session_agent::{Agent, SessionManager};

mod common;
use common::{PASSWORD, channel, quiet_session, start_agent, unlock};

type Body = UnsyncBoxBody<Bytes, BoxError>;

fn token(text: &str) -> Token {
    Token::new(text).unwrap()
}

fn empty_body() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An agent stand-in for the tests that are about the executor or the store, not the
/// transport: it accepts only `accepted`, refreshes with `refresh` when set, and rejects
/// anything else as RFC 6750 says.
#[derive(Clone)]
struct Stub {
    accepted: Arc<Mutex<Vec<String>>>,
    refresh: Arc<Mutex<Option<String>>>,
}

impl Stub {
    fn new(accepted: &[&str]) -> Self {
        Self {
            accepted: Arc::new(Mutex::new(accepted.iter().map(|s| s.to_string()).collect())),
            refresh: Arc::new(Mutex::new(None)),
        }
    }

    fn refresh_with(&self, token: &str) {
        *self.refresh.lock().unwrap() = Some(token.to_owned());
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Future + Send,
    > + Clone
    + Send
    + 'static {
        let stub = self.clone();
        tower::service_fn(move |request: http::Request<Body>| {
            let stub = stub.clone();
            async move {
                // Read the body as a transport would, so that the call can be replayed.
                let (parts, body) = request.into_parts();
                let _ = body.collect().await;
                let request = http::Request::from_parts(parts, ());
                let sent = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                let accepted = sent
                    .as_ref()
                    .is_some_and(|t| stub.accepted.lock().unwrap().contains(t));
                let mut response = http::Response::builder();
                if accepted {
                    if let Some(new) = stub.refresh.lock().unwrap().clone() {
                        response = response.header("authorization", format!("Bearer {new}"));
                    }
                } else {
                    response = response.status(401).header(
                        "www-authenticate",
                        r#"Bearer realm="stub", error="invalid_token""#,
                    );
                }
                Ok::<_, Infallible>(response.body(String::from("ok")).unwrap())
            }
        })
    }
}

fn get() -> http::Request<Body> {
    http::Request::get("http://stub/")
        .body(empty_body())
        .unwrap()
}

// ---- A corrupt session file -------------------------------------------------------------

#[tokio::test]
async fn a_reauthenticator_recovers_from_a_corrupt_file() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "garbage here\n").unwrap();
    let session = quiet_session(dir.path());
    let error = session.start().await.unwrap_err();
    assert!(matches!(error, Error::CorruptFile { .. }), "{error:?}");
    assert_eq!(error.exit_code(), 65);

    let (layer, runs) = common::counting_reauth_layer(agent.address, &session).await;
    let mut client = AgentServiceClient::new(layer.layer(channel(agent.address).await));
    let status = client.agent_status(EmptyMessage {}).await.unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    common::assert_file_token_accepted(&agent.manager, &session);
}

#[tokio::test]
async fn explicit_changes_replace_or_remove_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let session = Session::new(tower_agent_session::TokenFile::new(&path));
    std::fs::write(&path, "garbage here\n").unwrap();
    session.start_with_token(token("a.b.c")).await.unwrap();
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("a.b.c"))
    );
    std::fs::write(&path, "garbage here\n").unwrap();
    session.clear().await.unwrap();
    assert!(!path.exists());
}

#[tokio::test]
async fn starting_removes_the_temp_files_of_writers_that_died() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(".token.dead1234.tmp");
    std::fs::write(&stale, "half a tok").unwrap();
    std::fs::write(dir.path().join("token.lock"), "").unwrap();
    Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .start()
    .await
    .unwrap();
    assert!(!stale.exists(), "the dead writer's temp file is gone");
}

// ---- Another executor -------------------------------------------------------------------

#[test]
fn the_session_works_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    futures_executor::block_on(async {
        session.start().await.unwrap();
        session.start_with_token(token("one")).await.unwrap();
        session.flush().await.unwrap();
        session.clear().await.unwrap();
        session.start_with_token(token("two")).await.unwrap();
    });
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("two"))
    );
    let other = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    futures_executor::block_on(other.start()).unwrap();
    assert_eq!(other.token(), Some(token("two")));
}

#[test]
fn both_layers_work_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .build();
    let stub = Stub::new(&["fresh", "refreshed"]);
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let reauthenticating = SessionLayer::new(session.clone()).reauthenticate_with(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Error>(token("fresh")) }
    });
    futures_executor::block_on(async {
        session.start_with_token(token("stale")).await.unwrap();
        let response = reauthenticating
            .layer(stub.service())
            .oneshot(get())
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "replayed after the recovery");
        stub.refresh_with("refreshed");
        let response = SessionLayer::new(session.clone())
            .layer(stub.service())
            .oneshot(get())
            .await;
        assert_eq!(response.unwrap().status(), 200);
        session.flush().await.unwrap();
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(session.token(), Some(token("refreshed")));
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("refreshed"))
    );
}

// ---- A client clock ahead of the agent's ------------------------------------------------

/// An agent whose clock is an hour behind the client's: it accepts a token the client's clock
/// says expired a minute ago.
async fn agent_behind(manager: SessionManager) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(Agent::new(manager, PASSWORD).serve(listener, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

#[tokio::test]
async fn the_clients_clock_alone_never_triggers_a_reauthentication() {
    let manager = SessionManager::new()
        .unwrap()
        .with_leeway(Duration::from_secs(3600));
    let (address, _stop) = agent_behind(manager.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    let expired = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    session.start_with_token(expired).await.unwrap();
    assert!(session.expires_at().unwrap() < SystemTime::now());

    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let layer = SessionLayer::new(session.clone()).reauthenticate_with(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Err::<Token, _>(std::io::Error::other("no prompt expected")) }
    });
    let mut client = AgentServiceClient::new(layer.layer(channel(address).await));
    for _ in 0..2 {
        let status = client.agent_status(EmptyMessage {}).await.unwrap();
        assert_eq!(status.get_ref().status, "LIVE");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no password was asked for");
}

// ---- A tonic interceptor ----------------------------------------------------------------

#[tokio::test]
async fn an_interceptor_keeps_the_session_through_refresh() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .watch(tower_agent_session::Watch::Off)
    // Every refresh written, even one minted in the unlock's second, before `refresh` ends.
    .agent_tokens(tower_agent_session::AgentTokens::RevokedOnRefresh)
    .build();
    let unlocked = unlock(channel(agent.address).await, PASSWORD)
        .await
        .unwrap();
    session.start_with_token(unlocked.clone()).await.unwrap();
    let for_calls = session.clone();
    let mut client =
        AgentServiceClient::with_interceptor(channel(agent.address).await, move |mut request| {
            for_calls.authorize(&mut request)?;
            Ok(request)
        });

    let sent = session.epoch();
    let reply = client.agent_status(EmptyMessage {}).await.unwrap();
    session
        .refresh(
            sent,
            http::StatusCode::OK,
            &reply.metadata().clone().into_headers(),
        )
        .await;
    let refreshed = session.token().unwrap();
    assert_ne!(refreshed, unlocked, "the refresh is in use");
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(refreshed.clone())
    );
    agent.manager.verify(&refreshed).unwrap();

    // A refresh answering a call sent before an explicit change is dropped.
    let sent = session.epoch();
    let reply = client.agent_status(EmptyMessage {}).await.unwrap();
    session.clear().await.unwrap();
    session
        .refresh(
            sent,
            http::StatusCode::OK,
            &reply.metadata().clone().into_headers(),
        )
        .await;
    assert_eq!(session.token(), None, "no session comes back");
    assert_eq!(session.file().unwrap().load().unwrap().token, None);

    // A refresh never overwrites another process's unlock: the compare-and-swap loses. The
    // session starts from a token of its own unlock, so that the call's refresh is a new token
    // (started from this second's refresh, it would get the same bytes back: nothing to write).
    let mine = unlock(channel(agent.address).await, PASSWORD)
        .await
        .unwrap();
    session.start_with_token(mine).await.unwrap();
    let sent = session.epoch();
    let reply = client.agent_status(EmptyMessage {}).await.unwrap();
    let theirs = unlock(channel(agent.address).await, PASSWORD)
        .await
        .unwrap();
    session.file().unwrap().store(&theirs).unwrap();
    session
        .refresh(
            sent,
            http::StatusCode::OK,
            &reply.metadata().clone().into_headers(),
        )
        .await;
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(theirs.clone())
    );
    assert_eq!(session.token(), Some(theirs), "adopted what the file holds");
}

// ---- A write that fails after its rename ------------------------------------------------

/// A store whose writes land and then report an error, as a file write whose directory `fsync`
/// fails after the rename does.
#[derive(Clone, Default)]
struct FailsAfterWriting {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
    /// Told of every look the session's watch takes at the store.
    looks: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<()>>>>,
}

impl FailsAfterWriting {
    fn looks(&self) -> tokio::sync::mpsc::UnboundedReceiver<()> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.looks.lock().unwrap() = Some(tx);
        rx
    }

    fn outcome<T>(&self, written: T) -> Result<T, Error> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::Store(Arc::new(std::io::Error::other(
                "fsync of the directory failed",
            ))))
        } else {
            Ok(written)
        }
    }
}

impl TokenStore for FailsAfterWriting {
    fn load(&self) -> Result<Stored, Error> {
        self.inner.load()
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        let version = self.inner.store(token)?;
        self.outcome(version)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        match self.inner.swap(expected, new)? {
            Swap::Replaced(version) => self.outcome(Swap::Replaced(version)),
            lost => Ok(lost),
        }
    }

    fn clear(&self) -> Result<(), Error> {
        self.inner.clear()
    }

    fn version(&self) -> Result<Option<Version>, Error> {
        let version = self.inner.version();
        if let Some(looks) = &*self.looks.lock().unwrap() {
            let _ = looks.send(());
        }
        version
    }
}

#[tokio::test]
async fn a_write_that_fails_after_landing_is_not_taken_for_another_processs() {
    let store = FailsAfterWriting::default();
    let mut looks = store.looks();
    let session = Session::builder(store.clone())
        // A store of your own is watched by polling: every millisecond here.
        .watch(Watch::Poll(Duration::from_millis(1)))
        .build();
    let stub = Stub::new(&["one", "two"]);
    store.failing.store(true, Ordering::SeqCst);
    session.start_with_token(token("one")).await.unwrap_err();
    let epoch = session.epoch();
    // Two looks at the store after the write: at least one saw what it left.
    looks.recv().await.unwrap();
    looks.recv().await.unwrap();
    assert_eq!(
        session.stats().external_changes,
        0,
        "its own explicit write"
    );
    assert_eq!(session.epoch(), epoch);

    stub.refresh_with("two");
    let response = SessionLayer::new(session.clone())
        .layer(stub.service())
        .oneshot(get())
        .await;
    assert_eq!(response.unwrap().status(), 200);
    session.flush().await.unwrap_err();
    assert_eq!(store.inner.token(), Some(token("two")), "the write landed");
    store.failing.store(false, Ordering::SeqCst);
    while looks.try_recv().is_ok() {}
    looks.recv().await.unwrap();
    looks.recv().await.unwrap();
    let response = SessionLayer::new(session.clone())
        .layer(stub.service())
        .oneshot(get())
        .await;
    assert_eq!(response.unwrap().status(), 200);
    // Waits for any write the call made (a mistaken one would lose to "two"); what it reports
    // is the first write's failure.
    let _ = session.flush().await;
    assert_eq!(session.stats().external_changes, 0, "its own refresh write");
    assert_eq!(session.stats().lost_refreshes, 0);
    assert_eq!(session.epoch(), epoch);
}

// ---- A failed re-authentication ---------------------------------------------------------

#[tokio::test]
async fn a_failed_reauthentication_says_unauthenticated_or_the_agents_own_code() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());

    let no_password = SessionLayer::new(session.clone()).reauthenticate_with(|| async {
        Err::<Token, _>(std::io::Error::other("no password given"))
    });
    let mut client = AgentServiceClient::new(no_password.layer(channel(agent.address).await));
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("no password given"), "{status:?}");
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::Reauthentication(_))
    ));

    let password_channel = channel(agent.address).await;
    let wrong_password = SessionLayer::new(session.clone()).reauthenticate_with(move || {
        let channel = password_channel.clone();
        async move { unlock(channel, "not the password").await }
    });
    let mut client = AgentServiceClient::new(wrong_password.layer(channel(agent.address).await));
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::Reauthentication(_))
    ));
}
