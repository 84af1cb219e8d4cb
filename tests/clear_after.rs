//! `Session::clear_after` and a recovery that begins inside it: a call that fails during the
//! lock all re-authenticates under the lock the lock all holds, and keeps that lock after the
//! lock all is over, until its token is written. Another session on the file (another process,
//! as far as the lock goes) waits for that token instead of re-authenticating too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EmptyMessage};
use tower_agent_session::{BoxError, Error, Session, SessionLayer, Token, TokenFile, Watch};

mod common;
use common::{PASSWORD, channel, start_agent, unlock};

/// Far longer than any step here takes: only a wait that never ends reaches it.
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no end in {BOUND:?}"))
}

fn session(file: &std::path::Path) -> tower_agent_session::SessionBuilder {
    Session::builder(TokenFile::new(file)).watch(Watch::Off)
}

#[tokio::test]
async fn a_recovery_begun_inside_a_lock_all_keeps_the_lock_until_its_token_is_written() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");

    // A: the session that locks all. Its re-authenticator says it started, and waits for the
    // test's word before it unlocks.
    let a = session(&file).build();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (go_tx, go) = oneshot::channel::<()>();
    let go = Arc::new(Mutex::new(Some(go)));
    let password_channel = channel(agent.address).await;
    let reauthenticate_a = move || {
        let _ = started_tx.send(());
        let go = go.lock().unwrap().take();
        let channel = password_channel.clone();
        async move {
            if let Some(go) = go {
                let _ = go.await;
            }
            Ok::<Token, BoxError>(unlock(channel, PASSWORD).await?)
        }
    };
    let mut client_a = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(a.clone()).reauthenticate_with(reauthenticate_a))
            .service(channel(agent.address).await),
    );

    // B: another session on the same file, whose wait for the lock is told.
    let (waits_tx, mut waits) = mpsc::unbounded_channel();
    let b = session(&file)
        .on_reauth_wait(move |_| {
            let _ = waits_tx.send(());
        })
        .build();
    let runs_b = Arc::new(AtomicUsize::new(0));
    let counted = runs_b.clone();
    let (ran_tx, mut ran) = mpsc::unbounded_channel();
    let password_channel = channel(agent.address).await;
    let reauthenticate_b = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let _ = ran_tx.send(());
        let channel = password_channel.clone();
        async move { Ok::<Token, BoxError>(unlock(channel, PASSWORD).await?) }
    };
    let mut client_b = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(b.clone()).reauthenticate_with(reauthenticate_b))
            .service(channel(agent.address).await),
    );

    let first = unlock(channel(agent.address).await, PASSWORD)
        .await
        .unwrap();
    a.start_with_token(first.clone()).await.unwrap();
    b.start().await.unwrap();
    assert_eq!(b.token(), Some(first));

    // Inside the lock all, a call of A's fails: its recovery re-authenticates under the lock.
    let manager = agent.manager.clone();
    let call_a = bounded(
        "the lock all",
        a.clear_after(async {
            manager.lock_all().unwrap();
            let call = tokio::spawn(async move { client_a.agent_status(EmptyMessage {}).await });
            started.recv().await.expect("A's re-authenticator starts");
            Ok::<_, Error>(call)
        }),
    )
    .await
    .unwrap();

    // After the lock all, while A's re-authenticator still runs, a call of B's fails. B waits
    // for the lock A's recovery holds, rather than re-authenticating too.
    let call_b = tokio::spawn(async move { client_b.agent_status(EmptyMessage {}).await });
    bounded("B's wait for the lock", async {
        tokio::select! {
            _ = waits.recv() => {}
            _ = ran.recv() => panic!("B re-authenticated while A's recovery held the lock"),
        }
    })
    .await;
    assert_eq!(
        runs_b.load(Ordering::SeqCst),
        0,
        "B waits, and runs nothing"
    );

    // A's token comes, is written, and the lock goes: B takes that token from the file.
    go_tx.send(()).unwrap();
    bounded("A's call", call_a).await.unwrap().unwrap();
    bounded("B's call", call_b).await.unwrap().unwrap();
    assert_eq!(runs_b.load(Ordering::SeqCst), 0, "one unlock for both");
    assert_eq!(b.token(), a.token());
    assert!(a.token().is_some());
}

/// A re-authentication lock whose file cannot be made (here a directory stands at its path)
/// does not stop the lock all: `end_all` runs and the session is cleared, without the lock.
/// Before, the error creating the lock file returned from `clear_after` before `end_all` ran,
/// which its docs did not say: a user's lock all silently did not happen.
#[tokio::test]
async fn a_lock_all_goes_on_when_its_lock_file_cannot_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::create_dir(dir.path().join("token.reauth.lock")).unwrap();
    let session = session(&file).build();
    session
        .start_with_token(Token::new("a".repeat(40)).unwrap())
        .await
        .unwrap();
    let ended = Arc::new(AtomicUsize::new(0));
    let counted = ended.clone();
    bounded(
        "the lock all",
        session.clear_after(async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<(), Error>(())
        }),
    )
    .await
    .unwrap();
    assert_eq!(ended.load(Ordering::SeqCst), 1, "end_all ran");
    assert_eq!(session.token(), None);
    assert!(!file.exists(), "the session file is removed");
}
