//! Out-of-order refreshes over a real tonic transport: two calls are in flight, and the agent
//! answers the one whose refreshed JWT expires later first. The older refresh, arriving second,
//! must not displace the fresher one: not in memory, and not on disk, whatever `AgentTokens`.
//!
//! The agent is the crate's own, behind a layer that holds each call until the test releases
//! it (so the test, not the scheduler, orders the answers) and puts a chosen token in the
//! response's `authorization` header. The call names its token in `x-reply` metadata.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_agent_session::store::TokenStore as _;

use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tower::Service;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
use tower_agent_session::{AgentTokens, Session, SessionLayer, Token, layer::SessionService};
use tower_agent_session_agent::{Agent, SessionManager};

mod common;
use common::{PASSWORD, channel};

const REPLY: &str = "x-reply";

/// A JWT-shaped token expiring at `exp` (the client reads `exp` without verifying).
fn jwt(exp: u64, id: &str) -> Token {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Token::new(format!(
        "{}.{}.sig{id}",
        b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"exp":{exp},"jti":"{id}"}}"#))
    ))
    .unwrap()
}

/// Holds each call naming a reply until released, then answers it with that reply's token.
#[derive(Clone)]
struct Ordered<S> {
    inner: S,
    replies: Arc<HashMap<&'static str, Token>>,
    arrivals: mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
}

impl<S, B, ResB> Service<http::Request<B>> for Ordered<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let reply = request
            .headers()
            .get(REPLY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let held = reply.clone().map(|name| {
            let (release, released) = oneshot::channel();
            self.arrivals
                .send((name, release))
                .expect("the test listens");
            released
        });
        let replies = self.replies.clone();
        Box::pin(async move {
            if let Some(released) = held {
                released.await.expect("the test releases every call");
            }
            let mut response = inner.call(request).await?;
            if let Some(token) = reply.as_deref().and_then(|name| replies.get(name)) {
                assert!(
                    response.headers().contains_key("authorization"),
                    "the agent refreshed the call"
                );
                response
                    .headers_mut()
                    .insert("authorization", token.header_value());
            }
            Ok(response)
        })
    }
}

type Client = AgentServiceClient<SessionService<Channel>>;

async fn echo(mut client: Client, reply: &'static str) -> Token {
    let mut request = tonic::Request::new(EchoMessage {
        challenge: reply.into(),
    });
    request.metadata_mut().insert(REPLY, reply.parse().unwrap());
    let response = client.echo(request).await.expect("the call succeeds");
    let header = response.metadata().get("authorization").unwrap();
    Token::new(header.to_str().unwrap().strip_prefix("Bearer ").unwrap()).unwrap()
}

/// Two calls in flight; the fresher refresh is answered (and its call resolved) first.
async fn fresher_first(agent_tokens: AgentTokens) {
    // Both far later than the session's first token (an hour), so both are worth writing on
    // their own; the first answered expires a minute after the second.
    let fresh = jwt(4_102_444_800, "fresh");
    let stale = jwt(4_102_444_740, "stale");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = Agent::new(manager.clone(), PASSWORD);
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let replies = Arc::new(HashMap::from([
        ("fresh", fresh.clone()),
        ("stale", stale.clone()),
    ]));
    let ordered = tower::layer::layer_fn(move |inner| Ordered {
        inner,
        replies: replies.clone(),
        arrivals: arrivals_tx.clone(),
    });
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ordered)
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
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .watch(tower_agent_session::Watch::Off)
    .agent_tokens(agent_tokens)
    .build();
    session
        .start_with_token(manager.mint().unwrap())
        .await
        .unwrap();
    let client = AgentServiceClient::new(
        tower::ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel(address).await),
    );

    let fresh_call = tokio::spawn(echo(client.clone(), "fresh"));
    let stale_call = tokio::spawn(echo(client.clone(), "stale"));
    let mut held = HashMap::new();
    while held.len() < 2 {
        let (name, release) = arrivals.recv().await.expect("both calls arrive");
        held.insert(name, release);
    }
    // Both were sent with the first token, in one epoch; now answer the fresher one first and
    // wait until its call has resolved (its refresh taken, and written) before the other.
    held.remove("fresh").unwrap().send(()).unwrap();
    assert_eq!(fresh_call.await.unwrap(), fresh);
    assert_eq!(session.token(), Some(fresh.clone()));
    held.remove("stale").unwrap().send(()).unwrap();
    assert_eq!(
        stale_call.await.unwrap(),
        stale,
        "the header passes through"
    );
    session.flush().await.unwrap();

    assert_eq!(
        session.token(),
        Some(fresh.clone()),
        "an older refresh replaced a fresher one in memory"
    );
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(fresh),
        "an older refresh replaced a fresher one on disk ({agent_tokens:?})"
    );
    let stats = session.stats();
    assert_eq!((stats.refreshes, stats.writes), (2, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_refresh_arriving_last_keeps_the_fresher_token() {
    fresher_first(AgentTokens::LiveUntilExpiry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_refresh_arriving_last_keeps_the_fresher_token_when_refreshes_revoke() {
    fresher_first(AgentTokens::RevokedOnRefresh).await;
}
