//! Whole tonic calls, for a count of instructions: unary `Echo` over loopback, the client and
//! the agent in one process, on one current-thread Tokio runtime, so that callgrind counts
//! every instruction of both sides of a call and nothing waits on another thread.
//!
//! With `LOOPBACK_KIND` set, the binary makes `LOOPBACK_CALLS` calls (default 2000) of that
//! kind after 200 to warm up, and exits, for `valgrind --tool=callgrind`
//! (see `benches/README.md`):
//!
//! - `static`: tower-http's `AddAuthorization` with the token, an agent that sends no refresh;
//! - `session`: `SessionLayer`, the same agent;
//! - `static_refreshing`: `AddAuthorization`, an agent that answers every call with a new
//!   token (the client ignores it);
//! - `session_refreshing`: `SessionLayer`, that agent: every call takes a refresh.
//!
//! The agent is the crate's, without its token checks (a verify costs the same for every
//! kind); the refreshing one puts a new JWT-shaped token (`iat`, `exp`, a unique `jti`) on
//! every response, as the crate's agent did before it minted one a second. Every token has the
//! session token's `exp`: the session keeps each refresh in memory and writes none, as it
//! writes at most once a second in real use, so that the count does not depend on how long a
//! run took. A refresh taken costs (`session_refreshing` - `static_refreshing`) -
//! (`session` - `static`).
//!
//! Without `LOOPBACK_KIND` (`cargo bench --bench loopback`), each kind runs for a moment and
//! its time per call is printed: a check that every kind works, not a measurement.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{HeaderValue, header};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tower::Layer;
use tower::util::MapResponseLayer;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
use tower_agent_session::{Session, SessionLayer, Token, layer::SessionService};
use tower_agent_session_agent::{Agent, SessionManager};
use tower_http::auth::AddAuthorization;

mod support;

/// The clients measured; an enum so that every call is one concrete future.
enum Client {
    Static(AgentServiceClient<AddAuthorization<Channel>>),
    Session(AgentServiceClient<SessionService<Channel>>),
}

impl Client {
    async fn echo(&mut self) {
        let message = EchoMessage {
            challenge: "x".into(),
        };
        let reply = match self {
            Self::Static(client) => client.echo(message).await,
            Self::Session(client) => client.echo(message).await,
        };
        if let Err(status) = reply {
            panic!("echo failed: {status:?}");
        }
    }
}

/// The agent's gRPC service on loopback; with `refresh_exp`, every response carries a new
/// token expiring then.
async fn start_agent(refresh_exp: Option<u64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("the bound address");
    let manager = SessionManager::new().expect("a session manager");
    let server = Agent::new(manager, "bench").into_server();
    let incoming = TcpIncoming::from(listener);
    match refresh_exp {
        None => {
            tokio::spawn(
                Server::builder()
                    .add_service(server)
                    .serve_with_incoming(incoming),
            );
        }
        Some(exp) => {
            let minted = Arc::new(AtomicU64::new(1));
            let refresh =
                MapResponseLayer::new(move |mut response: http::Response<tonic::body::Body>| {
                    let jti = minted.fetch_add(1, Ordering::Relaxed);
                    let value = format!("Bearer {}", support::jwt(exp, jti));
                    let mut value = HeaderValue::try_from(value).expect("a JWT is a header value");
                    value.set_sensitive(true);
                    response.headers_mut().insert(header::AUTHORIZATION, value);
                    response
                });
            tokio::spawn(
                Server::builder()
                    .layer(refresh)
                    .add_service(server)
                    .serve_with_incoming(incoming),
            );
        }
    }
    address
}

async fn connect(address: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("the agent accepts the connection")
}

const KINDS: [&str; 4] = [
    "static",
    "session",
    "static_refreshing",
    "session_refreshing",
];

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exp = support::unix_now() + 3600;
    let token = Token::new(support::jwt(exp, 0)).expect("a JWT is a token");

    let quiet = runtime.block_on(start_agent(None));
    let refreshing = runtime.block_on(start_agent(Some(exp)));
    let client = |kind: &str| -> (Client, Option<Session>) {
        let address = if kind.ends_with("_refreshing") {
            refreshing
        } else {
            quiet
        };
        let channel = runtime.block_on(connect(address));
        if kind.starts_with("static") {
            let with_token = AddAuthorization::bearer(channel, token.expose()).as_sensitive(true);
            return (Client::Static(AgentServiceClient::new(with_token)), None);
        }
        let session = Session::new(tower_agent_session::TokenFile::new(dir.path().join(kind)));
        runtime
            .block_on(session.start_with_token(token.clone()))
            .expect("the session starts");
        let layered = SessionLayer::new(session.clone()).layer(channel);
        (
            Client::Session(AgentServiceClient::new(layered)),
            Some(session),
        )
    };
    let run = |client: &mut Client, calls: u64| {
        runtime.block_on(async {
            for _ in 0..calls {
                client.echo().await;
            }
        });
    };

    if let Ok(kind) = std::env::var("LOOPBACK_KIND") {
        assert!(
            KINDS.contains(&kind.as_str()),
            "LOOPBACK_KIND is one of {KINDS:?}"
        );
        let calls: u64 = std::env::var("LOOPBACK_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000);
        let (mut client, session) = client(&kind);
        run(&mut client, 200);
        run(&mut client, calls);
        if let Some(session) = session {
            eprintln!("{kind}: {:?}", session.stats());
        }
        return;
    }

    // `cargo test --benches` runs this binary too: a few calls of each kind are enough there.
    let calls = if std::env::args().any(|a| a == "--bench") {
        2000
    } else {
        20
    };
    for kind in KINDS {
        let (mut client, _session) = client(kind);
        run(&mut client, calls / 10);
        let started = Instant::now();
        run(&mut client, calls);
        let each = started.elapsed() / u32::try_from(calls).unwrap_or(u32::MAX);
        println!("loopback/{kind}: {each:?} a call ({calls} calls)");
    }
}
