//! Another process's change to the session file reaches a running session through its watch,
//! with no call made: the `client` example, run as its own process, unlocks and locks while a
//! session in this process waits for the change. Linux only: the notification test checks for
//! the inotify instance in `/proc/self/fd`.
#![cfg(target_os = "linux")]

use std::time::Duration;

use tower_agent_session::{Session, TokenFile, Watch};

#[path = "cli_support/mod.rs"]
mod cli_support;
use cli_support::Fixture;
#[path = "watch_support/mod.rs"]
mod watch_support;
use watch_support::{BOUND, inotify_instances, until};

async fn sees_unlock_and_lock(watch: Watch) {
    let fixture = Fixture::new();
    let instances = inotify_instances();
    let session = Session::builder(TokenFile::in_dir(fixture.session_dir()))
        .watch(watch)
        .build();
    session.start().await.unwrap();
    assert_eq!(session.token(), None);
    if watch == Watch::Notify {
        // Polled for its first second, then watched by notification: wait for the hand-over,
        // so that what follows is seen by inotify alone.
        until(
            "the session watches its file by notification after its first second",
            || inotify_instances() > instances,
        )
        .await;
    }

    let since = session.epoch();
    fixture.unlock();
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("the unlock in another process is picked up");
    assert_eq!(
        session.token().map(|t| t.expose().to_owned()),
        Some(fixture.token())
    );
    assert_eq!(session.stats().external_changes, 1);

    let since = session.epoch();
    fixture.client(&["lock"]).expect_code(0);
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("the lock in another process is picked up");
    assert_eq!(session.token(), None);
    assert_eq!(session.stats().external_changes, 2);
}

#[tokio::test]
async fn another_processs_unlock_and_lock_are_picked_up_by_notification() {
    sees_unlock_and_lock(Watch::Notify).await;
}

#[tokio::test]
async fn another_processs_unlock_and_lock_are_picked_up_by_polling() {
    sees_unlock_and_lock(Watch::Poll(Duration::from_millis(20))).await;
}
