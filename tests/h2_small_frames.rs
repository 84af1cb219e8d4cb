//! The agent's h2 connection and calls it turns away on their headers.
//!
//! h2 (0.4.16 on) keeps a connection-wide budget for small DATA frames: each non-final DATA frame
//! under 256 bytes costs 256 minus its length, given back when the application reads the frame
//! or the stream's receive buffer is cleared. Spent, the connection ends with
//! `GOAWAY(ENHANCE_YOUR_CALM, "too_many_data_frames")`, failing every call in flight. The budget
//! is half the connection window, so 512 KiB with hyper's 1 MiB window (the agent's).
//!
//! tonic sends a unary call's message as such a frame, its END_STREAM in an empty frame after it.
//! h2 charges the frame when it arrives even if it ignores it, which it does when the request
//! body was dropped already or the stream was reset after an early response: that frame is never
//! read, so its charge is never given back. An agent that turns a call away on its headers (a
//! token refused after a lock all) and drops the body therefore loses ~250 bytes of the budget
//! for every such call whose message was still on its way, for the connection's whole life. Under
//! churn that is a few calls at each lock all, and the connection went down after minutes.
//!
//! Here each refused call's message is made to arrive after the agent turned the call away:
//! the client sends it only then, and the agent answers only once a later call of the client's,
//! sent after the message, has arrived (h2 sends a connection's frames in order). Load makes that
//! order likely; here it is certain, so that 2 560 refused calls on one connection would spend the
//! budget (the 2 115th does) in seconds. The connection must survive all of them.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower_agent_session::Error;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage};
use tower_agent_session_agent::{Agent, SessionManager};

mod common;
use common::PASSWORD;

/// Calls in flight at once, as in the churn test.
const TASKS: usize = 32;
/// Refused calls on the connection: each costs 248 bytes (an 8-byte message frame) of a
/// 524 288-byte budget when its frame is charged and never given back: the 2 115th spends it.
const CALLS_PER_TASK: usize = 80;
/// Only a bound on a hang: the calls take a second or two.
const STALL: std::time::Duration = std::time::Duration::from_secs(60);
/// The header by which the agent's side finds a refused call's [`Meeting`].
const CALL_HEADER: &str = "x-test-call";
/// The header of the call that follows a refused call's message.
const AFTER_HEADER: &str = "x-test-after";

/// Where a refused call's two sides meet: the agent tells the client that it turned the call
/// away; the client's body says that the message went to the transport; the agent learns that
/// the message arrived when the call sent after it does.
#[derive(Default)]
struct Meeting {
    refused: Notify,
    sent: Notify,
    arrived: Notify,
}

type Meetings = Arc<Mutex<HashMap<u64, Arc<Meeting>>>>;

/// The client's request body: tonic's, held back until the agent has turned the call away.
struct HeldBody {
    inner: tonic::body::Body,
    meeting: Arc<Meeting>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(wait) = self.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() {
            self.meeting.sent.notify_one();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.wait.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The agent's side, outside the agent's own layers: tells the client once the agent's stack has
/// taken a refused call (the refusal is decided, and the body dropped, right then), and holds
/// the answer until the call sent after the message arrives.
#[derive(Clone)]
struct Hold<S> {
    inner: S,
    meetings: Meetings,
}

impl<S, B> tower::Service<http::Request<B>> for Hold<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let meeting = |header| {
            let id = request
                .headers()
                .get(header)?
                .to_str()
                .ok()?
                .parse::<u64>()
                .ok()?;
            self.meetings.lock().unwrap().get(&id).cloned()
        };
        if let Some(after) = meeting(AFTER_HEADER) {
            after.arrived.notify_one();
        }
        let refused = meeting(CALL_HEADER);
        let clone = self.inner.clone();
        let future = std::mem::replace(&mut self.inner, clone).call(request);
        if let Some(refused) = &refused {
            refused.refused.notify_one();
        }
        Box::pin(async move {
            let response = future.await?;
            if let Some(refused) = refused {
                refused.arrived.notified().await;
            }
            Ok(response)
        })
    }
}

/// The agent as [`Agent::serve`] serves it (its auth layer, tonic's server with its settings),
/// with [`Hold`] outside; dropping the sender stops it.
async fn start_agent(
    manager: SessionManager,
    meetings: Meetings,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = Agent::new(manager, PASSWORD);
    let hold = tower::layer::layer_fn(move |inner| Hold {
        inner,
        meetings: meetings.clone(),
    });
    let server = tonic::transport::Server::builder()
        .layer(hold)
        .layer(agent.auth_layer())
        .serve_with_incoming_shutdown(
            agent.into_server(),
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::spawn(server);
    (address, stop)
}

/// A channel to `address` that counts the connections it makes.
async fn counted_channel(address: SocketAddr, connections: Arc<AtomicUsize>) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connections = connections.clone();
            async move {
                connections.fetch_add(1, Ordering::SeqCst);
                let stream = TcpStream::connect(address).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

fn accepted(manager: &SessionManager) -> tonic::metadata::AsciiMetadataValue {
    let token = manager.mint().unwrap();
    tonic::metadata::MetadataValue::try_from(token.header_value().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_whose_messages_arrive_late_do_not_end_the_connection() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let manager = SessionManager::new().unwrap();
    let meetings = Meetings::default();
    let (address, _stop) = start_agent(manager.clone(), meetings.clone()).await;
    let connections = Arc::new(AtomicUsize::new(0));
    let channel = counted_channel(address, connections.clone()).await;

    // A token the agent refuses, as every token is just after a lock all.
    let revoked = manager.mint().unwrap();
    manager.lock_all().unwrap();
    let revoked =
        tonic::metadata::MetadataValue::try_from(revoked.header_value().as_bytes()).unwrap();

    let held = {
        let meetings = meetings.clone();
        ServiceBuilder::new()
            .map_request(move |request: http::Request<tonic::body::Body>| {
                let meeting = request
                    .headers()
                    .get(CALL_HEADER)
                    .and_then(|id| id.to_str().ok()?.parse::<u64>().ok())
                    .and_then(|id| meetings.lock().unwrap().get(&id).cloned());
                let Some(meeting) = meeting else {
                    return request;
                };
                let waiting = meeting.clone();
                request.map(|inner| {
                    tonic::body::Body::new(HeldBody {
                        inner,
                        meeting,
                        wait: Some(Box::pin(async move { waiting.refused.notified().await })),
                    })
                })
            })
            .service(channel.clone())
    };

    let next_id = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let mut refused = AgentServiceClient::new(held.clone());
            let mut after = AgentServiceClient::new(channel.clone());
            let (meetings, next_id) = (meetings.clone(), next_id.clone());
            let (revoked, accepted) = (revoked.clone(), accepted(&manager));
            tokio::spawn(async move {
                let mut unexpected = Vec::new();
                for _ in 0..CALLS_PER_TASK {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let meeting = Arc::new(Meeting::default());
                    meetings.lock().unwrap().insert(id, meeting.clone());
                    let mut request = tonic::Request::new(EchoMessage {
                        challenge: "x".into(),
                    });
                    let metadata = request.metadata_mut();
                    metadata.insert("authorization", revoked.clone());
                    metadata.insert(CALL_HEADER, id.into());
                    let mut following = tonic::Request::new(EmptyMessage {});
                    let metadata = following.metadata_mut();
                    metadata.insert("authorization", accepted.clone());
                    metadata.insert(AFTER_HEADER, id.into());
                    let call = refused.echo(request);
                    tokio::pin!(call);
                    // A call can end before its message leaves (the connection is lost): then
                    // there is nothing to follow it.
                    let (call, after) = tokio::select! {
                        call = &mut call => (call, Ok(())),
                        () = meeting.sent.notified() => {
                            let (call, after) =
                                tokio::join!(call, after.agent_status(following));
                            (call, after.map(drop))
                        }
                    };
                    meetings.lock().unwrap().remove(&id);
                    match call {
                        Err(status)
                            if matches!(Error::from_status(&status), Some(Error::TokenInvalid)) => {
                        }
                        other => unexpected.push(format!("task {task}, refused call: {other:?}")),
                    }
                    if let Err(status) = after {
                        unexpected.push(format!("task {task}, call after: {status:?}"));
                    }
                }
                unexpected
            })
        })
        .collect();
    let mut unexpected = Vec::new();
    for task in tasks {
        let calls = tokio::time::timeout(STALL, task).await;
        unexpected.extend(calls.expect("the calls stalled").unwrap());
    }
    let shown: Vec<_> = unexpected.iter().take(5).collect();
    assert!(
        unexpected.is_empty(),
        "{} of {} refused calls did not end as refused, first {shown:#?}",
        unexpected.len(),
        TASKS * CALLS_PER_TASK,
    );

    // The same connection still carries a call the agent accepts.
    let mut request = tonic::Request::new(EmptyMessage {});
    request
        .metadata_mut()
        .insert("authorization", accepted(&manager));
    AgentServiceClient::new(channel)
        .agent_status(request)
        .await
        .unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the channel had to connect again: the agent ended the connection"
    );
}
