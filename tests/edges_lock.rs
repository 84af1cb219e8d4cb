//! Another process holding the session file's lock (a client stopped with Ctrl-Z mid-write, a
//! hung network filesystem): no call waits on it longer than its bound, explicit changes fail
//! with a typed error naming the lock file, nothing is written or removed without the lock, and
//! reading never takes it. The holder is a real process: this test binary, re-run as a child
//! that takes the lock and keeps it until told to let go.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use tower::Layer as _;
use tower_agent_session::proto::{AgentServiceClient, EmptyMessage};
use tower_agent_session::{Error, Session, Token};

mod cli_support;
mod common;
mod reliability_common;

use common::{PASSWORD, channel, start_agent, unlock};
use reliability_common::{ChildProcess, child_role, fail, hear, param, say, take_lock};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";

/// Short bounds, so that each test gives up soon; the defaults are covered by the docs.
const REFRESH_WAIT: Duration = Duration::from_millis(200);
const EXPLICIT_WAIT: Duration = Duration::from_millis(300);
/// The bound a test does not expect to be used: were it used, the test would hang until its
/// guard fails it.
const NEVER: Duration = Duration::from_secs(3600);

/// Only a bound on a hang: a passing run never comes near it.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    assert_eq!(role, "hold-lock");
    let path = PathBuf::from(param("LOCK"));
    let file = take_lock(&path);
    if let Ok(token) = std::env::var("RELIABILITY_WRITE") {
        // Another writer's own write, under its lock: a temp file renamed over the file.
        let target = path.with_file_name("token");
        let temp = path.with_file_name(".token.other.tmp");
        std::fs::write(&temp, format!("{token}\n")).unwrap_or_else(|e| fail(e));
        std::fs::rename(&temp, &target).unwrap_or_else(|e| fail(e));
    }
    say("locked");
    // Holds the lock until the parent closes stdin (or dies).
    while hear().is_some() {}
    drop(file);
}

/// Another process that holds `lock` until dropped.
fn hold_lock(lock: &Path) -> ChildProcess {
    hold_lock_writing(lock, None)
}

/// Another process that takes `lock`, writes `token` to the session file beside it if given,
/// and holds the lock until dropped.
fn hold_lock_writing(lock: &Path, token: Option<&Token>) -> ChildProcess {
    let mut params = vec![("LOCK", lock.display().to_string())];
    if let Some(token) = token {
        params.push(("WRITE", token.expose().to_owned()));
    }
    let mut holder = ChildProcess::spawn(CHILD_ENTRY, "hold-lock", &params);
    holder.expect("locked");
    holder
}

/// A session that writes every refresh (a JWT minted within the same second as the one on disk
/// expires with it, and would not be written otherwise), with these bounds on its lock waits.
fn bounded_session(dir: &Path, refresh: Duration, explicit: Duration) -> Session {
    let file = tower_agent_session::TokenFile::new(dir.join("token"))
        .refresh_lock_wait(refresh)
        .lock_wait(explicit);
    Session::builder(file)
        .watch(tower_agent_session::Watch::Off)
        // Every refresh is written, even one minted in the same second as the stored token.
        .agent_tokens(tower_agent_session::AgentTokens::RevokedOnRefresh)
        .build()
}

#[track_caller]
fn assert_locked(error: &Error, lock: &Path) {
    match error {
        Error::Locked { path, .. } => assert_eq!(path, lock),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    assert_eq!(error.exit_code(), 75, "EX_TEMPFAIL");
    let text = error.to_string();
    assert!(text.contains(&lock.display().to_string()), "{text}");
    assert!(text.contains("another process"), "{text}");
}

#[tokio::test]
async fn a_refresh_gives_up_on_a_held_lock_and_is_written_later() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = bounded_session(dir.path(), REFRESH_WAIT, NEVER);
    let lock = session.file().unwrap().lock_path().to_owned();
    let unlocked = unlock(channel(agent.address).await, PASSWORD)
        .await
        .unwrap();
    session.start_with_token(unlocked.clone()).await.unwrap();
    let mut client = AgentServiceClient::new(
        tower_agent_session::SessionLayer::new(session.clone()).layer(channel(agent.address).await),
    );

    let holder = hold_lock(&lock);
    let status = tokio::time::timeout(HANG, client.agent_status(EmptyMessage {}))
        .await
        .expect("the call waited on another process's lock")
        .expect("the agent's answer is handed over");
    assert_eq!(status.get_ref().status, "LIVE");
    let refreshed = session.token().unwrap();
    assert_ne!(refreshed, unlocked, "the refresh is used in memory");
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(unlocked.clone()),
        "nothing is written without the lock"
    );
    // The writer gives up on its own bound; `flush` waits for that and reports it.
    let flushed = tokio::time::timeout(HANG, session.flush()).await.unwrap();
    assert_locked(&flushed.unwrap_err(), &lock);
    assert_eq!(session.stats().lock_timeouts, 1);
    assert_eq!(session.stats().writes, 0);

    // Reading takes no lock: another process starts from the file meanwhile.
    let reader = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    tokio::time::timeout(HANG, reader.start())
        .await
        .expect("reading waited on the lock")
        .unwrap();
    assert_eq!(reader.token(), Some(unlocked));

    drop(holder);
    client.agent_status(EmptyMessage {}).await.unwrap();
    let on_disk = session.file().unwrap().load().unwrap().token.unwrap();
    assert_eq!(
        Some(&on_disk),
        session.token().as_ref(),
        "written once free"
    );
    agent.manager.verify(&on_disk).unwrap();
    assert_eq!(session.stats().writes, 1);
    session.flush().await.unwrap();
}

#[tokio::test]
async fn explicit_changes_fail_with_a_typed_error_and_leave_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let session = bounded_session(dir.path(), NEVER, EXPLICIT_WAIT);
    let lock = session.file().unwrap().lock_path().to_owned();
    let first = Token::new("first.token.here").unwrap();
    session.start_with_token(first.clone()).await.unwrap();

    let holder = hold_lock(&lock);
    let second = Token::new("second.token.here").unwrap();
    let written = tokio::time::timeout(HANG, session.start_with_token(second))
        .await
        .expect("an unlock waited forever on the lock");
    assert_locked(&written.unwrap_err(), &lock);
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(first.clone())
    );

    let cleared = tokio::time::timeout(HANG, session.clear())
        .await
        .expect("a lock waited forever on the lock");
    assert_locked(&cleared.unwrap_err(), &lock);
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(first.clone()),
        "never removed without the lock"
    );

    // The blocking API gives up the same way, each on its own bound.
    let file = tower_agent_session::TokenFile::new(dir.path().join("token"))
        .lock_wait(EXPLICIT_WAIT)
        .refresh_lock_wait(NEVER);
    assert_locked(&file.clear().unwrap_err(), &lock);
    assert_locked(&file.store(&first).unwrap_err(), &lock);
    let refresh = file.lock_wait(NEVER).refresh_lock_wait(REFRESH_WAIT);
    assert_locked(
        &refresh
            .swap(Some(&first), &Token::new("third").unwrap())
            .unwrap_err(),
        &lock,
    );

    drop(holder);
    session.clear().await.unwrap();
    assert_eq!(session.file().unwrap().load().unwrap().token, None);
}

mod cli {
    use super::*;
    use cli_support::Fixture;

    #[test]
    fn status_answers_and_warns_while_another_process_holds_the_lock() {
        let fixture = Fixture::new();
        fixture.unlock();
        let before = fixture.token();
        // The agent's tokens live until they expire: the status's refresh is worth writing
        // once it expires later than the unlocked token, a second on.
        fixture.wait_for_a_later_token(&before);
        let holder = hold_lock(&fixture.session_dir().join("token.lock"));
        fixture
            .client(&["--lock-wait", "0.3", "status"])
            .expect_code(0)
            .expect_stdout_line("LIVE")
            .expect_stderr("token.lock")
            .expect_stderr("not saved");
        assert_eq!(fixture.token(), before, "nothing written without the lock");
        drop(holder);
        fixture.client(&["status"]).expect_code(0);
        assert_ne!(fixture.token(), before, "written once the lock is free");
    }

    #[test]
    fn lock_and_unlock_give_up_with_exit_code_75() {
        let fixture = Fixture::new();
        fixture.unlock();
        let before = fixture.token();
        // The agent's tokens live until they expire: the status's refresh is worth writing
        // once it expires later than the unlocked token, a second on.
        fixture.wait_for_a_later_token(&before);
        let holder = hold_lock(&fixture.session_dir().join("token.lock"));
        fixture
            .client(&["--lock-wait", "0.3", "lock"])
            .expect_code(75)
            .expect_stderr("token.lock")
            .expect_stderr("another process");
        assert_eq!(fixture.token(), before);
        fixture
            .client_with_env(
                &["--lock-wait", "0.3", "unlock"],
                &[("AGENT_PASSWORD", PASSWORD)],
            )
            .expect_code(75)
            .expect_stderr("token.lock");
        assert_eq!(fixture.token(), before);
        drop(holder);
        fixture.client(&["lock"]).expect_code(0);
        assert!(!fixture.token_path().exists());
    }
}

#[tokio::test]
async fn a_password_call_is_answered_within_the_refresh_bound() {
    use std::convert::Infallible;
    use tower::ServiceExt as _;

    let dir = tempfile::tempdir().unwrap();
    let file = tower_agent_session::TokenFile::new(dir.path().join("token"))
        .refresh_lock_wait(REFRESH_WAIT)
        .lock_wait(NEVER);
    let session = Session::builder(file).start_on_password(true).build();
    let lock = session.file().unwrap().lock_path().to_owned();
    std::fs::write(&lock, "").unwrap();
    // An agent that answers a password call with a session token, as Polykey's does.
    let agent = tower::service_fn(|_: http::Request<String>| async {
        let response = http::Response::builder()
            .header("authorization", "Bearer from.the.password")
            .body(String::new())
            .unwrap();
        Ok::<_, Infallible>(response)
    });
    let request = http::Request::get("http://agent/")
        .header("authorization", "Basic OnBhc3N3b3Jk")
        .body(String::new())
        .unwrap();

    let holder = hold_lock(&lock);
    let response = tokio::time::timeout(
        HANG,
        tower_agent_session::SessionLayer::new(session.clone())
            .layer(agent)
            .oneshot(request),
    )
    .await
    .expect("the call waited for the explicit write's bound, not the call's")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        None,
        "not written yet"
    );
    drop(holder);
    // The write goes on, and `flush` waits for it.
    tokio::time::timeout(HANG, session.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(Token::new("from.the.password").unwrap())
    );
}

#[tokio::test]
async fn an_unlock_that_gave_up_never_lets_a_refresh_clobber_the_holders_token() {
    let agent = start_agent().await;
    let dir = tempfile::tempdir().unwrap();
    let session = bounded_session(dir.path(), REFRESH_WAIT, EXPLICIT_WAIT);
    let lock = session.file().unwrap().lock_path().to_owned();
    session
        .start_with_token(agent.manager.mint().unwrap())
        .await
        .unwrap();
    // Another process unlocks (its token on disk, under its lock) while this one's unlock
    // waits for the lock and gives up.
    let theirs = agent.manager.mint().unwrap();
    let holder = hold_lock_writing(&lock, Some(&theirs));
    let ours = agent.manager.mint().unwrap();
    assert_locked(&session.start_with_token(ours).await.unwrap_err(), &lock);
    drop(holder);
    // A call with this process's token brings a refresh: the file is another process's now,
    // so the refresh loses and the session takes what the file holds.
    let mut client = AgentServiceClient::new(
        tower_agent_session::SessionLayer::new(session.clone()).layer(channel(agent.address).await),
    );
    client.agent_status(EmptyMessage {}).await.unwrap();
    tokio::time::timeout(HANG, session.flush())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(theirs.clone())
    );
    assert_eq!(session.token(), Some(theirs));
    assert_eq!(session.stats().lost_refreshes, 1);
}
