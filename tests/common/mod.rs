//! What the transport tests share: an agent on loopback and clients of it.
#![allow(dead_code)] // each test file uses its own part of this

use std::net::SocketAddr;
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tower_agent_session::proto::{AgentServiceClient, PasswordMessage};
use tower_agent_session::{Session, Token};
use tower_agent_session_agent::{Agent, SessionManager};

pub const PASSWORD: &str = "correct horse battery staple";

/// A running agent; dropping it stops the server.
pub struct RunningAgent {
    pub address: SocketAddr,
    pub manager: SessionManager,
    _stop: oneshot::Sender<()>,
}

pub async fn start_agent() -> RunningAgent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Agent::new(manager.clone(), PASSWORD).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    RunningAgent {
        address,
        manager,
        _stop: stop,
    }
}

pub async fn channel(address: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A session that looks at its file only when a test makes it, so each test controls what it
/// sees; its calls wait for their writes (as for an agent whose refreshes revoke), however slow
/// a loaded disk is.
pub fn quiet_session(dir: &std::path::Path) -> Session {
    Session::builder(tower_agent_session::TokenFile::new(dir.join("token")))
        .watch(tower_agent_session::Watch::Off)
        .agent_tokens(tower_agent_session::AgentTokens::RevokedOnRefresh)
        .call_wait(Duration::from_secs(3600))
        .build()
}

/// Unlocks over `channel` (no session layer) with `password`.
pub async fn unlock(channel: Channel, password: &str) -> Result<Token, tonic::Status> {
    let reply = AgentServiceClient::new(channel)
        .session_unlock(PasswordMessage {
            password: password.into(),
        })
        .await?
        .into_inner();
    Token::new(reply.token).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// Holds the first `n` calls whose path ends with `path` at the server until all `n` have
/// arrived, so that they are answered together (real coordination, no sleeps).
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    barrier: std::sync::Arc<tokio::sync::Barrier>,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    n: usize,
    path: &'static str,
}

/// A layer of [`Gate`]s sharing one barrier.
pub fn gate_layer<S>(
    n: usize,
    path: &'static str,
) -> impl tower::Layer<S, Service = Gate<S>> + Clone {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tower::layer::layer_fn(move |inner| Gate {
        inner,
        barrier: barrier.clone(),
        seen: seen.clone(),
        n,
        path,
    })
}

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let hold = request.uri().path().ends_with(self.path)
            && self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < self.n;
        let barrier = self.barrier.clone();
        Box::pin(async move {
            if hold {
                barrier.wait().await;
            }
            inner.call(request).await
        })
    }
}

/// Asserts that the session file holds a token `manager` accepts, read as another process
/// would read it.
#[track_caller]
pub fn assert_file_token_accepted(manager: &SessionManager, session: &Session) {
    let token = session
        .file()
        .expect("a session file")
        .load()
        .map(|stored| stored.token)
        .expect("the session file is readable")
        .expect("the session file holds a token");
    if let Err(error) = manager.verify(&token) {
        panic!("the agent refuses the session file's token: {error}");
    }
}

/// A re-authenticating layer over `session` whose re-authenticator unlocks with [`PASSWORD`]
/// over a channel of its own (no layer), and the count of its runs.
pub async fn counting_reauth_layer(
    address: SocketAddr,
    session: &Session,
) -> (
    tower_agent_session::layer::ReauthLayer,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counter, password_channel) = (runs.clone(), channel(address).await);
    let layer =
        tower_agent_session::SessionLayer::new(session.clone()).reauthenticate_with(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let channel = password_channel.clone();
            async move { unlock(channel, PASSWORD).await }
        });
    (layer, runs)
}

/// Waits until `session` is no longer as it was at `since` (another process's change picked up
/// by its watch), failing the test after a generous bound instead of hanging.
pub async fn picked_up(session: &Session, since: tower_agent_session::Epoch) {
    tokio::time::timeout(Duration::from_secs(30), session.changed_since(since))
        .await
        .expect("the session never picked up the other process's change");
}
