//! Replay whatever the timing: a call refused for its session is replayed after the recovery
//! even when the transport had not read its body by the time the refusal came back.
//!
//! The request body is held back by a body that yields nothing until a oneshot fires; a service
//! below the session layer, on the real tonic channel, fires it. The agent refuses on the
//! headers alone, so the refusal always comes back before any of the body was read.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder};
use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
use tower_agent_session::{BoxError, Error, Session, SessionLayer, Token};

mod common;
use common::{PASSWORD, RunningAgent, channel, quiet_session, start_agent, unlock};

/// Long enough for a loaded machine, short enough that a hang fails the run.
const PATIENCE: Duration = Duration::from_secs(60);

/// A request body that yields nothing until `release` fires (or its sender is gone), then
/// what `inner` yields.
struct HeldBack {
    inner: tonic::body::Body,
    release: Option<oneshot::Receiver<()>>,
}

impl Body for HeldBack {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(release) = self.release.as_mut() {
            let _ = std::task::ready!(Pin::new(release).poll(cx));
            self.release = None;
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Above the session layer: holds back the body of the first request it sees.
#[derive(Clone)]
struct Hold<S> {
    inner: S,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl<S> Service<http::Request<tonic::body::Body>> for Hold<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let release = self.release.lock().unwrap().take();
        self.inner.call(request.map(|inner| {
            tonic::body::Body::new(HeldBack {
                inner,
                release: Some(release.expect("one call per test")),
            })
        }))
    }
}

/// When [`Release`] lets the held-back body go.
#[derive(Clone, Copy)]
enum ReleaseOn {
    /// When the call is sent again: the first attempt cannot have read any of its body
    /// before the layer decided whether to replay it.
    Resend,
    /// As the refusal of the first attempt comes back, racing the first attempt's transport
    /// (which may read the body now) against the layer (which may take it for the replay).
    Refusal,
}

/// Below the session layer, on the channel: counts the calls sent and lets the held-back
/// body go as `on` says.
#[derive(Clone)]
struct Release<S> {
    inner: S,
    on: ReleaseOn,
    sent: Arc<AtomicUsize>,
    release: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl<S, B, ResB> Service<http::Request<B>> for Release<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let first = self.sent.fetch_add(1, Ordering::SeqCst) == 0;
        if !first && matches!(self.on, ReleaseOn::Resend) {
            fire(&self.release);
        }
        let future = self.inner.call(request);
        let release =
            (first && matches!(self.on, ReleaseOn::Refusal)).then(|| self.release.clone());
        Box::pin(async move {
            let response = future.await?;
            if let Some(release) = release
                && Error::from_response(&response).is_some()
            {
                fire(&release);
            }
            Ok(response)
        })
    }
}

fn fire(release: &Mutex<Option<oneshot::Sender<()>>>) {
    if let Some(release) = release.lock().unwrap().take() {
        let _ = release.send(());
    }
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

/// One echo call whose body is held back until `on`, on a stale session: the echo it gets
/// back, the re-authenticator's runs and the calls sent.
async fn held_back_echo(
    on: ReleaseOn,
    challenge: &str,
) -> (Result<String, tonic::Status>, usize, usize) {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = stale_session(&agent, dir.path()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let password_channel = channel(agent.address).await;
    let reauthenticate = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let channel = password_channel.clone();
        async move { Ok::<Token, BoxError>(unlock(channel, PASSWORD).await?) }
    };
    let (release_tx, release_rx) = oneshot::channel();
    let sent = Arc::new(AtomicUsize::new(0));
    let below = Release {
        inner: channel(agent.address).await,
        on,
        sent: sent.clone(),
        release: Arc::new(Mutex::new(Some(release_tx))),
    };
    let layered = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate))
        .service(below);
    let mut client = AgentServiceClient::new(Hold {
        inner: layered,
        release: Arc::new(Mutex::new(Some(release_rx))),
    });
    let echo = tokio::time::timeout(
        PATIENCE,
        client.echo(EchoMessage {
            challenge: challenge.into(),
        }),
    )
    .await
    .expect("the call must not hang");
    (
        echo.map(|reply| reply.into_inner().challenge),
        runs.load(Ordering::SeqCst),
        sent.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_body_not_read_when_the_refusal_comes_is_replayed() {
    let challenge = "held back until the refusal is in ".repeat(100);
    let (echo, runs, sent) = held_back_echo(ReleaseOn::Resend, &challenge).await;
    assert_eq!(
        echo.expect("replayed after the recovery"),
        challenge,
        "the agent saw the body intact"
    );
    assert_eq!(runs, 1, "one re-authentication");
    assert_eq!(sent, 2, "the refused call and its replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_released_as_the_refusal_comes_is_replayed() {
    // Whichever reads the body first, the dying first attempt or the replay, the replay sends
    // all of it.
    for round in 0..20 {
        let challenge = format!("round {round} ").repeat(100);
        let (echo, runs, sent) = held_back_echo(ReleaseOn::Refusal, &challenge).await;
        assert_eq!(echo.expect("replayed after the recovery"), challenge);
        assert_eq!((runs, sent), (1, 2));
    }
}
