//! Re-authentication after another process locked: the session file is gone, while this
//! session still holds the token it had (it has not looked at the file since). When a call
//! with that token is rejected, the file offers nothing to take over, so the
//! re-authenticator must run; taking "no token" from the file as if it were another process's
//! new token would replay the call without credentials and fail it.
//!
//! The removal is done on disk by the test, standing for `agent lock` in another terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tower_agent_session::store::TokenStore as _;

use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EmptyMessage};
use tower_agent_session::{BoxError, SessionLayer, Token, TokenFile};

mod common;
use common::{PASSWORD, channel, quiet_session, start_agent, unlock};

#[tokio::test]
async fn a_rejected_call_after_another_process_locked_reauthenticates() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    // Looks at the file only when a recovery makes it, so the session keeps its token after
    // the file goes.
    let session = quiet_session(dir.path());
    let old = agent.manager.mint().unwrap();
    session.start_with_token(old.clone()).await.unwrap();
    // Another terminal locks: the agent forgets every session and the file goes.
    agent.manager.lock_all().unwrap();
    let file = TokenFile::in_dir(dir.path());
    file.clear().unwrap();
    assert_eq!(
        session.token(),
        Some(old.clone()),
        "the session still holds it"
    );

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let password_channel = channel(agent.address).await;
    let reauthenticate = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let channel = password_channel.clone();
        async move { Ok::<Token, BoxError>(unlock(channel, PASSWORD).await?) }
    };
    let mut client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate))
            .service(channel(agent.address).await),
    );

    let status = client
        .agent_status(EmptyMessage {})
        .await
        .expect("the call succeeds after re-authenticating");
    assert_eq!(status.get_ref().status, "LIVE");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the re-authenticator ran once"
    );
    let token = session.token().expect("the session holds the new token");
    assert_ne!(token, old);
    common::assert_file_token_accepted(&agent.manager, &session);
}
