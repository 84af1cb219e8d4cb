//! A session watched by notification whose directory is removed (as a logout empties
//! `$XDG_RUNTIME_DIR`) polls until the directory is back, sees the unlock that brings it back, and
//! then watches by notification again, whether the directory is named by an absolute path or a
//! relative one. The other processes are the `client` example.
//!
//! Linux only, and a test binary of its own: it counts this process's inotify instances
//! (`/proc/self/fd`) and watch threads (`/proc/self/task`), which another test running beside it
//! would change.
#![cfg(target_os = "linux")]

use std::path::{Component, Path, PathBuf};

use tower_agent_session::{Session, TokenFile};

#[path = "cli_support/mod.rs"]
mod cli_support;
use cli_support::Fixture;
#[path = "watch_support/mod.rs"]
mod watch_support;
use watch_support::{BOUND, inotify_instances, polling_threads, until};

#[tokio::test]
async fn a_removed_directory_is_polled_until_it_is_back_then_watched_again() {
    let fixture = Fixture::new();
    let instances = inotify_instances();
    removed_and_back(&fixture, fixture.session_dir(), instances).await;
    until("the first session's watch is dropped", || {
        inotify_instances() == instances && polling_threads() == 0
    })
    .await;
    // The same directory named relative to the working directory, through `..`: the watch
    // must tell its own directory's removal among its events all the same.
    let relative = relative_to_cwd(&fixture.session_dir());
    assert!(relative.is_relative() && relative.starts_with(".."));
    removed_and_back(&fixture, relative, instances).await;
}

/// `dir` as a path relative to this process's working directory.
fn relative_to_cwd(dir: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let up = cwd.components().skip(1).map(|_| Component::ParentDir);
    let down = dir.components().skip(1);
    up.map(|c| c.as_os_str().to_owned())
        .chain(down.map(|c| c.as_os_str().to_owned()))
        .collect()
}

/// A session of `dir` (the fixture's session directory, however named) sees its directory
/// removed, polls until another process's unlock brings it back, then watches by notification
/// again; `instances` is the inotify instances this process held without it.
async fn removed_and_back(fixture: &Fixture, dir: PathBuf, instances: usize) {
    let session = Session::new(TokenFile::in_dir(dir));
    session.start().await.unwrap();
    until(
        "the session hands over to notification after its first second",
        || inotify_instances() == instances + 1 && polling_threads() == 0,
    )
    .await;

    let since = session.epoch();
    fixture.unlock();
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("the unlock is picked up");

    // The directory goes, its file with it: a lock.
    let since = session.epoch();
    std::fs::remove_dir_all(fixture.session_dir()).unwrap();
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("the removal is picked up");
    assert_eq!(session.token(), None);
    until("the session polls while the directory is gone", || {
        polling_threads() == 1
    })
    .await;

    // Another process's unlock brings the directory back.
    let since = session.epoch();
    fixture.unlock();
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("the unlock that brings the directory back is picked up");
    assert_eq!(
        session.token().map(|t| t.expose().to_owned()),
        Some(fixture.token())
    );

    // Then notification again, and nothing else: the polling thread is gone.
    until("the session watches by notification again", || {
        inotify_instances() == instances + 1 && polling_threads() == 0
    })
    .await;
    let since = session.epoch();
    fixture.client(&["lock"]).expect_code(0);
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("a lock after the directory came back is picked up");
    assert_eq!(session.token(), None);
    assert_eq!(session.stats().external_changes, 4);
}
