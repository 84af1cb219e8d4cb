//! The session layer over a real tonic transport on loopback, against the crate's own agent:
//! the three states a client can start in (no token, a valid token, an invalid token), the
//! re-authentication flow out of each failure, and group commit of refresh writes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tower_agent_session::store::TokenStore as _;

use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use tower_agent_session_agent::{Agent, SessionManager};

use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Server};
use tower::ServiceBuilder;
use tower_agent_session::{Error, Session, SessionLayer, Token, layer::SessionService};

mod common;
use common::{PASSWORD, channel, quiet_session as session_in, start_agent};

type Client = AgentServiceClient<SessionService<Channel>>;

async fn client(address: SocketAddr, session: &Session) -> Client {
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(channel(address).await);
    AgentServiceClient::new(service)
}

fn session_error(status: tonic::Status) -> Error {
    Error::from_status(&status).unwrap_or_else(|| panic!("not a session failure: {status:?}"))
}

/// The re-authentication flow: unlock with the password, start the session with the token.
async fn reauthenticate(client: &mut Client, session: &Session) -> Token {
    let reply = client
        .session_unlock(PasswordMessage {
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = Token::new(reply.token).unwrap();
    session.start_with_token(token.clone()).await.unwrap();
    token
}

/// A status call that must succeed; returns the refreshed token the agent sent back.
async fn live(client: &mut Client) -> Token {
    let response = client.agent_status(EmptyMessage {}).await.unwrap();
    assert_eq!(response.get_ref().status, "LIVE");
    let header = response.metadata().get("authorization").unwrap();
    Token::new(header.to_str().unwrap().strip_prefix("Bearer ").unwrap()).unwrap()
}

#[tokio::test]
async fn no_token_is_token_not_provided_then_unlock_works() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = session_in(dir.path());
    session.start().await.unwrap();
    let mut client = client(agent.address, &session).await;

    let error = session_error(client.agent_status(EmptyMessage {}).await.unwrap_err());
    assert!(matches!(error, Error::TokenNotProvided), "{error:?}");
    assert_eq!(error.exit_code(), 77);
    assert_eq!(error.to_string(), "JWT Token not provided in metadata");
    assert!(
        !session.file().unwrap().path().exists(),
        "a failure writes nothing"
    );

    let unlocked = reauthenticate(&mut client, &session).await;
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(unlocked.clone())
    );
    let refreshed = live(&mut client).await;
    assert_ne!(refreshed, unlocked);
    assert_eq!(session.token(), Some(refreshed.clone()));
    common::assert_file_token_accepted(&agent.manager, &session);
}

#[tokio::test]
async fn valid_token_is_used_and_each_refresh_written() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    // Minted to expire before any refresh will, so each refresh buys time and is written.
    let seed = agent
        .manager
        .mint_expiring_at(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    tower_agent_session::TokenFile::in_dir(dir.path())
        .store(&seed)
        .unwrap();
    let session = session_in(dir.path());
    session.start().await.unwrap();
    assert_eq!(session.token(), Some(seed.clone()));
    let mut client = client(agent.address, &session).await;

    let refreshed = live(&mut client).await;
    assert_ne!(refreshed, seed);
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(refreshed.clone())
    );
    assert_eq!(session.stats().writes, 1);

    // The next call carries the refreshed token, which the agent accepts.
    let echo = client
        .echo(EchoMessage {
            challenge: "ping".into(),
        })
        .await
        .unwrap();
    assert_eq!(echo.get_ref().challenge, "ping");
    // The agent mints one refresh a second: a call in the same second brings the same token
    // back, which is no new refresh.
    assert!((1..=2).contains(&session.stats().refreshes));
    agent.manager.verify(&session.token().unwrap()).unwrap();
}

#[tokio::test]
async fn invalid_token_is_token_invalid_then_unlock_works() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let stale = agent.manager.mint().unwrap();
    agent.manager.lock_all().unwrap();
    tower_agent_session::TokenFile::in_dir(dir.path())
        .store(&stale)
        .unwrap();
    let session = session_in(dir.path());
    session.start().await.unwrap();
    let mut client = client(agent.address, &session).await;

    let error = session_error(client.agent_status(EmptyMessage {}).await.unwrap_err());
    assert!(matches!(error, Error::TokenInvalid), "{error:?}");
    assert_eq!(error.exit_code(), 65);
    assert_eq!(
        error.to_string(),
        "Invalid JWT Token, please reauthenticate."
    );
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(stale.clone()),
        "a rejection leaves the file alone"
    );

    let unlocked = reauthenticate(&mut client, &session).await;
    assert_ne!(unlocked, stale);
    live(&mut client).await;
    common::assert_file_token_accepted(&agent.manager, &session);
}

#[tokio::test]
async fn an_expired_token_is_token_invalid() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let expired = agent
        .manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let session = session_in(dir.path());
    session.start_with_token(expired).await.unwrap();
    let mut client = client(agent.address, &session).await;
    let error = session_error(client.agent_status(EmptyMessage {}).await.unwrap_err());
    assert!(matches!(error, Error::TokenInvalid), "{error:?}");
}

#[tokio::test]
async fn lock_all_invalidates_the_session_and_unlock_recovers() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = session_in(dir.path());
    session.start().await.unwrap();
    let mut client = client(agent.address, &session).await;
    reauthenticate(&mut client, &session).await;
    live(&mut client).await;

    let locked = client.sessions_lock_all(EmptyMessage {}).await.unwrap();
    assert!(
        locked.metadata().get("authorization").is_none(),
        "lock all hands out no token"
    );
    let error = session_error(client.agent_status(EmptyMessage {}).await.unwrap_err());
    assert!(matches!(error, Error::TokenInvalid), "{error:?}");
    reauthenticate(&mut client, &session).await;
    live(&mut client).await;
}

#[tokio::test]
async fn another_process_unlocking_is_picked_up_by_a_long_lived_session() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    daemon.start().await.unwrap();
    let mut client = client(agent.address, &daemon).await;
    let error = session_error(client.agent_status(EmptyMessage {}).await.unwrap_err());
    assert!(matches!(error, Error::TokenNotProvided));

    // Another terminal unlocks; the daemon's watch picks the token up, and its next call
    // carries it.
    let since = daemon.epoch();
    let other = Session::new(tower_agent_session::TokenFile::in_dir(dir.path()));
    let mut other_client = self::client(agent.address, &other).await;
    reauthenticate(&mut other_client, &other).await;
    common::picked_up(&daemon, since).await;
    live(&mut client).await;
    assert_eq!(daemon.stats().external_changes, 1);
}

/// A JWT-shaped token whose `exp` is `exp` (the client reads `exp` without verifying).
fn token_expiring(exp: u64) -> Token {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Token::new(format!(
        "{}.{}.c2ln",
        b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(format!(r#"{{"exp":{exp}}}"#))
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_share_writes_and_wait_for_one_that_covers_them() {
    const CALLS: usize = 64;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let agent = Agent::new(manager.clone(), PASSWORD);
    // Every refresh gets its own, later `exp`, so each one is worth writing and freshness is
    // well defined: the test can then check each call against the file.
    let far = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 100_000;
    let counter = Arc::new(AtomicU64::new(0));
    let renumber = tower::util::MapResponseLayer::new(move |mut response: http::Response<_>| {
        if response.headers().contains_key("authorization") {
            let exp = far + counter.fetch_add(1, Ordering::Relaxed);
            response
                .headers_mut()
                .insert("authorization", token_expiring(exp).header_value());
        }
        response
    });
    let gate = common::gate_layer(CALLS, "/AgentStatus");
    let (_stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .layer(renumber)
        .layer(gate)
        .layer(agent.auth_layer())
        .add_service(agent.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let session = session_in(dir.path());
    session
        .start_with_token(manager.mint().unwrap())
        .await
        .unwrap();
    let client = client(address, &session).await;

    let calls = (0..CALLS).map(|_| {
        let mut client = client.clone();
        let session = session.clone();
        tokio::spawn(async move {
            let response = client.agent_status(EmptyMessage {}).await.unwrap();
            let own = response.metadata().get("authorization").unwrap();
            let own = Token::new(own.to_str().unwrap().strip_prefix("Bearer ").unwrap()).unwrap();
            // Read right as the call resolves: the file must already cover its token.
            let on_disk = session.file().unwrap().load().unwrap().token.unwrap();
            (own.expires_at().unwrap(), on_disk.expires_at().unwrap())
        })
    });
    let mut results = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        results.push(call.await.unwrap());
    }
    for (own, on_disk) in &results {
        assert!(
            on_disk >= own,
            "a call resolved before its token was durable"
        );
    }
    let stats = session.stats();
    println!("{CALLS} concurrent refreshing calls: {stats:?}");
    assert_eq!(stats.refreshes, CALLS as u64);
    // How many writes the 64 refreshes share depends on how the responses and the disk
    // interleave: a fast disk may write each one alone. What holds is that every write carries
    // at least one refresh; `tests/group_commit.rs` pins the sharing down without timing.
    assert!(
        (1..=stats.refreshes).contains(&stats.writes),
        "writes without a refresh to carry: {stats:?}"
    );
    let newest = results.iter().map(|(own, _)| *own).max().unwrap();
    assert_eq!(
        session
            .file()
            .unwrap()
            .load()
            .map(|stored| stored.token)
            .unwrap()
            .unwrap()
            .expires_at(),
        Some(newest),
        "the file ends with the freshest token"
    );
}
