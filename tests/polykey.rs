//! Against a real Polykey agent (v1.0.1-alpha.0, the last gRPC one): the wire as Polykey speaks
//! it; the session layer over it in the three session states, with its failures read from the
//! trailers, password calls starting the session and re-authentication replaying a unary call
//! and a stream; and `examples/polykey.rs` as real processes sharing the session file.
//!
//! Each test starts its own agent process (a fresh node path, a free loopback port; ~3-5 s), so
//! no test sees another's sessions or lock-all. The agent is built on first use (see
//! `polykey_support::agent`).
// Unix only: a real Polykey agent, run with node on the Linux side (none under Wine) (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use tower::{Layer as _, ServiceBuilder};
use tower_agent_session::{Error, Polykey, Session, SessionLayer, Token, TokenFile};

mod polykey_support;
use polykey_support::agent::{PASSWORD, PolykeyAgent};
use polykey_support::{
    ClientServiceClient, EmptyMessage, Vault, bearer_token, polykey_error, with_bearer,
    with_password,
};

/// A bound on any one call or stream: the agent answers on loopback in milliseconds; this only
/// turns a hang into a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {CALL_TIMEOUT:?}"))
}

/// A session token, from a call made with the password.
async fn unlock(client: &mut ClientServiceClient<tonic::transport::Channel>) -> String {
    let reply = within(
        "AgentUnlock",
        client.agent_unlock(with_password(EmptyMessage {}, PASSWORD)),
    )
    .await
    .unwrap();
    bearer_token(reply.metadata()).expect("an unlock answers with a token")
}

/// `AgentStatus` made with `token` by hand (outside any session layer).
async fn status_with(
    client: &mut ClientServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Result<tonic::Response<polykey_support::InfoMessage>, tonic::Status> {
    within(
        "AgentStatus",
        client.agent_status(with_bearer(EmptyMessage {}, token).unwrap()),
    )
    .await
}

/// A session kept in `dir`, started with `token`. Polykey's tokens have no `exp`, so the
/// crate cannot tell a newer one by its expiry: every new refresh is written.
async fn session_with(dir: &std::path::Path, token: &str) -> Session {
    let session = Session::builder(tower_agent_session::TokenFile::new(dir.join("token"))).build();
    session
        .start_with_token(Token::new(token).unwrap())
        .await
        .unwrap();
    session
}

/// An unlocked session in the agent's client directory, and a client through the plain layer
/// over a channel of its own (returned too, for calls made by hand).
async fn unlocked_client(
    agent: &PolykeyAgent,
) -> (
    tonic::transport::Channel,
    std::path::PathBuf,
    Session,
    ClientServiceClient<tower_agent_session::layer::SessionService<tonic::transport::Channel>>,
) {
    let channel = agent.channel().await;
    let token = unlock(&mut ClientServiceClient::new(channel.clone())).await;
    let dir = agent.client_dir();
    let session = session_with(&dir, &token).await;
    let client = ClientServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel.clone()),
    );
    (channel, dir, session, client)
}

#[tokio::test]
async fn a_password_call_answers_with_a_bearer_token_in_its_headers() {
    let agent = PolykeyAgent::start();
    let mut client = ClientServiceClient::new(agent.channel().await);

    let reply = within(
        "AgentStatus",
        client.agent_status(with_password(EmptyMessage {}, PASSWORD)),
    )
    .await
    .unwrap();

    let token = bearer_token(reply.metadata()).expect("authorization: Bearer <jwt> in headers");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(reply.get_ref().node_id, agent.node_id);
    // The token is a session: a call with it alone succeeds.
    status_with(&mut client, &token).await.unwrap();
}

#[tokio::test]
async fn a_call_without_authorization_is_auth_missing_on_the_raw_wire() {
    let agent = PolykeyAgent::start();
    let mut client = ClientServiceClient::new(agent.channel().await);

    let status = within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap_err();

    // grpc-js answers a session failure with UNKNOWN and Polykey's error as JSON in a trailer.
    assert_eq!(status.code(), tonic::Code::Unknown, "{status:?}");
    assert_eq!(status.message(), "Unknown Error");
    let error = polykey_error(&status).expect("an `error` trailer");
    assert_eq!(error.kind, "ErrorClientAuthMissing");
    assert_eq!(error.exit_code, Some(77));
    let failure = Error::from_status_with(&status, &Polykey).unwrap();
    assert!(matches!(failure, Error::TokenNotProvided), "{failure:?}");
    assert_eq!(failure.exit_code(), 77);
}

#[tokio::test]
async fn the_session_layer_keeps_the_refreshed_token_in_the_session_file() {
    let agent = PolykeyAgent::start();
    let (channel, dir, session, mut client) = unlocked_client(&agent).await;

    // No authorization of our own: the layer adds the session's token.
    let reply = within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap();
    let refreshed = bearer_token(reply.metadata()).expect("a refreshed token in the headers");
    within("flush", session.flush()).await.unwrap();

    // Polykey's tokens are the same bytes within one second, so the refresh may equal the
    // token we started with; what matters is that the file holds the one the agent just sent.
    let on_disk = TokenFile::new(dir.join("token"))
        .load()
        .map(|stored| stored.token)
        .unwrap()
        .expect("a token in the session file");
    assert_eq!(on_disk.expose(), refreshed);
    status_with(&mut ClientServiceClient::new(channel), &refreshed)
        .await
        .expect("the agent accepts the token in the session file");
}

/// The raw status, and how `Error::from_status_with(…, &Polykey)` reads it.
#[tokio::test]
async fn after_lock_all_old_tokens_are_denied_on_the_raw_wire() {
    let agent = PolykeyAgent::start();
    let mut client = ClientServiceClient::new(agent.channel().await);
    let token = unlock(&mut client).await;

    let locked = within(
        "AgentLockAll",
        client.agent_lock_all(with_bearer(EmptyMessage {}, &token).unwrap()),
    )
    .await
    .unwrap();
    // Lock all still answers with a token, refused like every other from now on.
    let from_lock_all = bearer_token(locked.metadata()).expect("lock all answers with a token");

    for (which, refused) in [
        ("the old token", &token),
        ("lock all's token", &from_lock_all),
    ] {
        let status = status_with(&mut client, refused).await.expect_err(which);
        assert_eq!(status.code(), tonic::Code::Unknown, "{which}: {status:?}");
        assert_eq!(status.message(), "Unknown Error", "{which}");
        let error = polykey_error(&status).expect("an `error` trailer");
        assert_eq!(error.kind, "ErrorClientAuthDenied", "{which}");
        assert_eq!(error.exit_code, Some(77), "{which}");
        assert_eq!(
            error.description,
            "Authorisation metadata is incorrect or expired"
        );
        let failure = Error::from_status_with(&status, &Polykey).expect(which);
        assert!(
            matches!(failure, Error::TokenInvalid),
            "{which}: {failure:?}"
        );
        assert_eq!(failure.exit_code(), 65);
    }

    // The password opens a new session.
    let fresh = unlock(&mut client).await;
    status_with(&mut client, &fresh).await.unwrap();
}

#[tokio::test]
async fn vaults_list_streams_through_the_session_layer() {
    let agent = PolykeyAgent::start();
    let (_, dir, session, mut client) = unlocked_client(&agent).await;
    for name in ["alpha", "beta"] {
        within(
            "VaultsCreate",
            client.vaults_create(Vault {
                name_or_id: name.to_owned(),
            }),
        )
        .await
        .unwrap();
    }

    let reply = within("VaultsList", client.vaults_list(EmptyMessage {}))
        .await
        .unwrap();
    // A streaming call's refresh comes in its headers, before the first message.
    let refreshed = bearer_token(reply.metadata()).expect("a refreshed token in the headers");
    let mut stream = reply.into_inner();
    let mut names = Vec::new();
    while let Some(item) = within("a VaultsList message", stream.message())
        .await
        .unwrap()
    {
        names.push(item.vault_name);
    }
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);

    within("flush", session.flush()).await.unwrap();
    let on_disk = TokenFile::new(dir.join("token"))
        .load()
        .unwrap()
        .token
        .unwrap();
    assert_eq!(on_disk.expose(), refreshed);
}

#[tokio::test]
async fn tls_pinned_to_another_agents_certificate_is_refused() {
    let other = std::thread::spawn(PolykeyAgent::start);
    let agent = PolykeyAgent::start();
    let other = other.join().unwrap();

    let refused = within(
        "connect",
        polykey_support::tls::connect(agent.address, &other.cert),
    )
    .await;
    let why = format!(
        "{:?}",
        refused.expect_err("a channel to an unpinned certificate")
    );
    // The pin's own refusal, not some other failure to connect.
    assert!(why.contains("ApplicationVerificationFailure"), "{why}");
    within(
        "connect",
        polykey_support::tls::connect(agent.address, &agent.cert),
    )
    .await
    .expect("the agent's own certificate is accepted");
}

// ---- The session kept with Polykey's own habits -----------------------------------------

/// A session set up for Polykey: its failures, password calls starting the session, and every
/// new token written (they have no `exp`).
fn polykey_session(dir: &std::path::Path) -> Session {
    Session::builder(tower_agent_session::TokenFile::new(dir.join("token")))
        .failures(Polykey)
        .start_on_password(true)
        .build()
}

#[tokio::test]
async fn the_three_session_states_with_the_plain_layer() {
    let agent = PolykeyAgent::start();
    let channel = agent.channel().await;
    let session = polykey_session(&agent.client_dir());
    session.start().await.unwrap();
    let mut client = ClientServiceClient::new(
        tower_agent_session::SessionLayer::new(session.clone()).layer(channel.clone()),
    );

    // No token.
    let status = within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap_err();
    let failure = Error::from_status_with(&status, &Polykey);
    assert!(
        matches!(failure, Some(Error::TokenNotProvided)),
        "{status:?}"
    );

    // A password call starts the session; a valid token then goes with every call.
    within(
        "AgentStatus",
        client.agent_status(with_password(EmptyMessage {}, PASSWORD)),
    )
    .await
    .unwrap();
    let started = session
        .token()
        .expect("the password call started the session");
    assert_eq!(session.file().unwrap().load().unwrap().token, Some(started));
    let reply = within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().node_id, agent.node_id);

    // An invalid token: lock all.
    within("AgentLockAll", client.agent_lock_all(EmptyMessage {}))
        .await
        .unwrap();
    let status = within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap_err();
    let failure = Error::from_status_with(&status, &Polykey);
    assert!(matches!(failure, Some(Error::TokenInvalid)), "{status:?}");
}

#[tokio::test]
async fn reauthentication_replays_a_unary_call_and_a_stream() {
    let agent = PolykeyAgent::start();
    let channel = agent.channel().await;
    let session = polykey_session(&agent.client_dir());
    session.start().await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (counter, password_channel) = (runs.clone(), channel.clone());
    let layer = SessionLayer::new(session.clone()).reauthenticate_with(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut client = ClientServiceClient::new(password_channel.clone());
        async move {
            let reply = client
                .agent_unlock(with_password(EmptyMessage {}, PASSWORD))
                .await?;
            let token = bearer_token(reply.metadata()).ok_or("no token")?;
            Ok::<_, tower_agent_session::BoxError>(Token::new(token)?)
        }
    });
    let mut client = ClientServiceClient::new(layer.layer(channel.clone()));
    let mut raw = ClientServiceClient::new(channel);

    // No token: recovered and replayed.
    let reply = within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().node_id, agent.node_id);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // After a lock all, a unary call.
    let token = session.token().unwrap();
    within(
        "AgentLockAll",
        raw.agent_lock_all(with_bearer(EmptyMessage {}, token.expose()).unwrap()),
    )
    .await
    .unwrap();
    within("AgentStatus", client.agent_status(EmptyMessage {}))
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // After a lock all, a server stream.
    for name in ["alpha", "beta"] {
        within(
            "VaultsCreate",
            client.vaults_create(Vault {
                name_or_id: name.to_owned(),
            }),
        )
        .await
        .unwrap();
    }
    let token = session.token().unwrap();
    within(
        "AgentLockAll",
        raw.agent_lock_all(with_bearer(EmptyMessage {}, token.expose()).unwrap()),
    )
    .await
    .unwrap();
    let mut stream = within("VaultsList", client.vaults_list(EmptyMessage {}))
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(item) = within("a VaultsList message", stream.message())
        .await
        .unwrap()
    {
        names.push(item.vault_name);
    }
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let on_disk = session.file().unwrap().load().unwrap().token.unwrap();
    status_with(&mut raw, on_disk.expose())
        .await
        .expect("the session file's token is accepted");
}

#[tokio::test]
async fn a_refresh_that_repeats_the_token_is_not_written() {
    const CALLS: usize = 100;
    let agent = PolykeyAgent::start();
    let channel = agent.channel().await;
    let session = polykey_session(&agent.client_dir());
    let mut client = ClientServiceClient::new(
        tower_agent_session::SessionLayer::new(session.clone()).layer(channel),
    );
    within(
        "AgentUnlock",
        client.agent_unlock(with_password(EmptyMessage {}, PASSWORD)),
    )
    .await
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    seen.insert(session.token().unwrap().expose().to_owned());
    for _ in 0..CALLS {
        let reply = within("AgentStatus", client.agent_status(EmptyMessage {}))
            .await
            .unwrap();
        seen.insert(bearer_token(reply.metadata()).unwrap());
    }
    // Written behind the calls (tokens live until they expire): wait for the writes, which a
    // loaded machine may not have finished when the last call returns.
    session.flush().await.unwrap();
    let stats = session.stats();
    // Polykey's tokens change once a second: each new one is written once, a repeat never.
    let new_tokens = seen.len() as u64 - 1;
    eprintln!("{CALLS} calls: {new_tokens} new tokens, {stats:?}");
    assert_eq!(stats.writes, new_tokens, "{stats:?}");
    assert_eq!(stats.refreshes, new_tokens, "{stats:?}");
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        session.token(),
        "the newest token is on disk"
    );
}
