//! Re-authentication over a real tonic transport: one unlock for many failing calls, replay,
//! no loops, the replay limit, a failing re-authenticator, and tokens expired by their claim.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tower_agent_session::store::TokenStore as _;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Server};
use tower::{Layer as _, Service, ServiceBuilder};
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage};
use tower_agent_session::{BoxError, Error, Session, SessionLayer, Token, layer::ReauthService};
use tower_agent_session_agent::SessionManager;

mod common;
use common::{PASSWORD, RunningAgent, channel, quiet_session, start_agent, unlock};

type Reauthenticator =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>> + Send + Sync>;
type Client = AgentServiceClient<ReauthService<Channel>>;

/// A re-authenticator that unlocks over its own channel (no layer) and counts its runs.
fn counting_unlock(channel: Channel, runs: Arc<AtomicUsize>) -> Reauthenticator {
    Box::new(move || {
        let channel = channel.clone();
        runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(unlock(channel, PASSWORD).await?) })
    })
}

async fn client_with(
    address: std::net::SocketAddr,
    session: &Session,
    reauthenticator: Reauthenticator,
    replay_limit: Option<usize>,
) -> Client {
    let mut layer = SessionLayer::new(session.clone()).reauthenticate_with(reauthenticator);
    if let Some(limit) = replay_limit {
        layer = layer.replay_limit(limit);
    }
    AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(layer)
            .service(channel(address).await),
    )
}

/// A session in a fresh directory holding a token the agent no longer accepts.
async fn stale_session(agent: &RunningAgent, dir: &std::path::Path) -> Session {
    let session = quiet_session(dir);
    session
        .start_with_token(agent.manager.mint().unwrap())
        .await
        .unwrap();
    agent.manager.lock_all().unwrap();
    session
}

/// A session in a fresh directory holding a token whose `exp` claim is a minute past.
async fn expired_session(manager: &SessionManager, dir: &std::path::Path) -> Session {
    let session = quiet_session(dir);
    let expired = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    session.start_with_token(expired).await.unwrap();
    session
}

#[tokio::test]
async fn a_failure_unlocks_replays_and_writes_the_new_token() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    let stale = session.token().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let unlock = counting_unlock(channel(agent.address).await, runs.clone());
    let mut client = client_with(agent.address, &session, unlock, None).await;

    let echo = client
        .echo(EchoMessage {
            challenge: "replayed".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        echo.get_ref().challenge,
        "replayed",
        "the body was sent again"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let on_disk = session.file().unwrap().load().unwrap().token.unwrap();
    assert_ne!(on_disk, stale);
    agent.manager.verify(&on_disk).unwrap();
}

#[tokio::test]
async fn no_token_unlocks_and_replays() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start().await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let unlock = counting_unlock(channel(agent.address).await, runs.clone());
    let mut client = client_with(agent.address, &session, unlock, None).await;
    let status = client.agent_status(EmptyMessage {}).await.unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    common::assert_file_token_accepted(&agent.manager, &session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_failures_unlock_once() {
    const CALLS: usize = 50;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = tower_agent_session_agent::Agent::new(manager.clone(), PASSWORD);
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .layer(common::gate_layer(CALLS, "/AgentStatus"))
            .layer(agent.auth_layer())
            .add_service(agent.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session
        .start_with_token(manager.mint().unwrap())
        .await
        .unwrap();
    manager.lock_all().unwrap();

    let runs = Arc::new(AtomicUsize::new(0));
    let unlock = counting_unlock(channel(address).await, runs.clone());
    let client = client_with(address, &session, unlock, None).await;
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.agent_status(EmptyMessage {}).await })
        })
        .collect();
    for call in calls {
        let status = call
            .await
            .unwrap()
            .expect("every call succeeds after the unlock");
        assert_eq!(status.get_ref().status, "LIVE");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one unlock");
    common::assert_file_token_accepted(&manager, &session);
}

#[tokio::test]
async fn a_failure_after_the_last_replay_is_surfaced_not_retried() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    // A re-authenticator whose tokens this agent does not accept.
    let foreign = SessionManager::new().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let bad: Reauthenticator = Box::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let token = foreign.mint().map_err(BoxError::from);
        Box::pin(async move { token })
    });
    let mut client = client_with(agent.address, &session, bad, None).await;
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::TokenInvalid)
    ));
    // A replay that fails again is recovered once more (its token may have been another
    // process's, ended by a lock all), and then handed over: two recoveries, three sendings,
    // no loop.
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "two recoveries, then the failure is handed over"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_not_replayed_but_the_session_recovers() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let unlock = counting_unlock(channel(agent.address).await, runs.clone());
    let mut client = client_with(agent.address, &session, unlock, Some(64)).await;
    let status = client
        .echo(EchoMessage {
            challenge: "x".repeat(100),
        })
        .await
        .unwrap_err();
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::TokenInvalid)
    ));
    // The call was not sent again, but the session recovered for the next ones: a client whose
    // calls are all large is not locked out.
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let echo = client
        .echo(EchoMessage {
            challenge: "x".repeat(100),
        })
        .await
        .unwrap();
    assert_eq!(echo.get_ref().challenge.len(), 100);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reauthenticator_unlocking_through_the_layer_does_not_deadlock() {
    // The user's mistake, but an easy one: the unlock goes through the layered channel, and
    // the token is expired by its claim, so the unlock call itself would want a renewal.
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = expired_session(&agent.manager, dir.path()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (layered_tx, layered_rx) = std::sync::mpsc::channel::<Client>();
    let layered_rx = Arc::new(std::sync::Mutex::new(layered_rx));
    let counted = runs.clone();
    let through_the_layer: Reauthenticator = Box::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let mut client = layered_rx.lock().unwrap().recv().unwrap();
        Box::pin(async move {
            let reply = client
                .session_unlock(tower_agent_session::proto::PasswordMessage {
                    password: PASSWORD.into(),
                })
                .await?;
            Ok(Token::new(reply.into_inner().token)?)
        })
    });
    let mut client = client_with(agent.address, &session, through_the_layer, None).await;
    layered_tx.send(client.clone()).unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        client.agent_status(EmptyMessage {}),
    )
    .await
    .expect("the call must not hang")
    .unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_caller_giving_up_does_not_start_a_second_reauthentication() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let started = Arc::new(std::sync::Mutex::new(Some(started_tx)));
    let release = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let password_channel = channel(agent.address).await;
    let counted = runs.clone();
    // The first run waits until the test releases it, as a person at a prompt would.
    let slow: Reauthenticator = Box::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let started = started.lock().unwrap().take();
        let release = release.clone();
        let channel = password_channel.clone();
        Box::pin(async move {
            if let Some(started) = started {
                let _ = started.send(());
            }
            if let Some(release) = release.lock().await.take() {
                let _ = release.await;
            }
            Ok(unlock(channel, PASSWORD).await?)
        })
    });
    let client = client_with(agent.address, &session, slow, None).await;
    let mut first = client.clone();
    let leading = tokio::spawn(async move { first.agent_status(EmptyMessage {}).await });
    started_rx.await.unwrap();
    // The call that started the recovery gives up; another one fails meanwhile.
    leading.abort();
    let mut second = client.clone();
    let waiting = tokio::spawn(async move { second.agent_status(EmptyMessage {}).await });
    release_tx.send(()).unwrap();
    let status = waiting.await.unwrap().unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one prompt for one burst");
}

#[tokio::test]
async fn a_failing_reauthenticator_is_surfaced_and_tried_again_later() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let password_channel = channel(agent.address).await;
    let flaky: Reauthenticator = Box::new(move || {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        let channel = password_channel.clone();
        Box::pin(async move {
            if run == 0 {
                return Err("the user closed the prompt".into());
            }
            Ok(unlock(channel, PASSWORD).await?)
        })
    });
    let mut client = client_with(agent.address, &session, flaky, None).await;
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    let error = Error::from_status(&status).expect("our error, through tonic");
    assert!(matches!(error, Error::Reauthentication(_)), "{error:?}");
    assert_eq!(error.exit_code(), 77);
    assert!(
        std::error::Error::source(&error)
            .unwrap()
            .to_string()
            .contains("closed the prompt")
    );
    let status = client.agent_status(EmptyMessage {}).await.unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Counts the calls the agent answered with a session failure.
#[derive(Clone)]
struct CountRejections<S> {
    inner: S,
    rejected: Arc<AtomicUsize>,
}

impl<S, B, ResB> Service<http::Request<B>> for CountRejections<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        let rejected = self.rejected.clone();
        Box::pin(async move {
            let response = future.await?;
            if Error::from_response(&response).is_some() {
                rejected.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response)
        })
    }
}

#[tokio::test]
async fn with_renewal_on_a_token_expired_by_its_claim_is_renewed_before_the_call() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = tower_agent_session_agent::Agent::new(manager.clone(), PASSWORD);
    let rejected = Arc::new(AtomicUsize::new(0));
    let counter = rejected.clone();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .layer(tower::layer::layer_fn(move |inner| CountRejections {
                inner,
                rejected: counter.clone(),
            }))
            .layer(agent.auth_layer())
            .add_service(agent.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let dir = tempfile::tempdir().unwrap();
    let session = expired_session(&manager, dir.path()).await;
    assert!(session.expires_at().unwrap() < SystemTime::now());

    let runs = Arc::new(AtomicUsize::new(0));
    let unlock = counting_unlock(channel(address).await, runs.clone());
    let layer = SessionLayer::new(session.clone())
        .reauthenticate_with(unlock)
        .renew_before_expiry(Duration::ZERO);
    let mut client = AgentServiceClient::new(layer.layer(channel(address).await));
    let status = client.agent_status(EmptyMessage {}).await.unwrap();
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        rejected.load(Ordering::SeqCst),
        0,
        "the expired token was never sent"
    );
}

#[tokio::test]
async fn without_a_reauthenticator_an_expired_token_is_still_sent() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = expired_session(&agent.manager, dir.path()).await;
    let mut client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel(agent.address).await),
    );
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    assert!(matches!(
        Error::from_status(&status),
        Some(Error::TokenInvalid)
    ));
}

#[tokio::test]
async fn another_process_token_is_used_before_unlocking() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    // Another terminal unlocked meanwhile.
    let other = unlock(channel(agent.address).await, PASSWORD)
        .await
        .unwrap();
    tower_agent_session::TokenFile::in_dir(dir.path())
        .store(&other)
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let unlock = counting_unlock(channel(agent.address).await, runs.clone());
    let mut client = client_with(agent.address, &session, unlock, None).await;
    client.agent_status(EmptyMessage {}).await.unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the file's token was enough"
    );
}
