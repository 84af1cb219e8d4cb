use std::io::{Seek, Write};
use std::sync::atomic::AtomicBool;

use super::*;
use crate::store::TokenStore;
use crate::{Error, Session, Token, TokenFile, Watch};

fn runtime_and_dir() -> (tokio::runtime::Runtime, tempfile::TempDir) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (runtime, tempfile::tempdir().unwrap())
}

/// A session with no watch of its own: the looks and watches are the test's.
fn unwatched(file: &TokenFile) -> Session {
    Session::builder(file.clone()).watch(Watch::Off).build()
}

/// Whether `session`'s watch in place is a notification one.
fn notified(session: &Session) -> bool {
    matches!(
        *session.shared.watcher.lock().unwrap(),
        Some(Armed(Some(_)))
    )
}

/// Another process rewrites the session file in place with a token of the same length, on a
/// filesystem whose clock is coarser than the writes: the file's `stat` is what it was. A poll
/// cannot tell; an event (the OS saying the file changed) reads the file and sees the token.
#[test]
#[cfg_attr(
    windows,
    ignore = "under Wine the look by stamp reads the file all the same: to be looked into"
)]
fn an_event_reads_the_file_even_when_its_stamp_did_not_move() {
    let (runtime, dir) = runtime_and_dir();
    let file = TokenFile::in_dir(dir.path());
    let session = unwatched(&file);
    let first = Token::new("a".repeat(40)).unwrap();
    let second = Token::new("b".repeat(40)).unwrap();
    runtime
        .block_on(session.start_with_token(first.clone()))
        .unwrap();
    let before = file.version().unwrap();

    let modified = std::fs::metadata(file.path()).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(file.path()).unwrap();
    let mut rewrite = std::fs::OpenOptions::new()
        .write(true)
        .open(file.path())
        .unwrap();
    rewrite.rewind().unwrap();
    rewrite
        .write_all(text.replace(first.expose(), second.expose()).as_bytes())
        .unwrap();
    rewrite.set_modified(modified).unwrap();
    drop(rewrite);
    assert_eq!(file.version().unwrap(), before, "the stamp did not move");

    // A poll that finds the stamp it knows starts no read: nothing to wait for.
    session.shared.look_at_store(Look::IfMoved);
    assert_eq!(session.token(), Some(first), "a poll goes by the stamp");
    session.shared.look_at_store(Look::Read);
    until(&runtime, "an event reads the file", || {
        session.token() == Some(second.clone())
    });
    assert_eq!(session.stats().external_changes, 1);
}

/// The watch reads the file when it changes, not when it is opened or read: its own read raises
/// those events, so reading on them would never stop (a core spun for as long as the session
/// lived). Other processes read the file too (every run of a command-line client). The counts
/// are inotify's.
#[cfg(target_os = "linux")]
#[test]
fn opens_and_reads_of_the_file_make_the_watch_read_nothing() {
    let (runtime, dir) = runtime_and_dir();
    let file = TokenFile::in_dir(dir.path());
    let session = Session::new(file.clone());
    runtime
        .block_on(session.start_with_token(Token::new("a".repeat(40)).unwrap()))
        .unwrap();
    let reads = || session.shared.look(|owner| owner.reads_started());
    // The first-second polls find the stamp unchanged and read nothing; the hand-over to
    // notification reads once.
    until(&runtime, "the session hands over to notification", || {
        notified(&session) && reads() == 1
    });

    for _ in 0..20 {
        std::fs::read_to_string(file.path()).unwrap();
    }
    // Then two changes by another writer. The OS tells of events in order, so once the second
    // is picked up, every event of the opens, the reads and the first change has been handled.
    let other = TokenFile::in_dir(dir.path());
    for fill in ["b", "c"] {
        let since = session.epoch();
        let token = Token::new(fill.repeat(40)).unwrap();
        other.store(&token).unwrap();
        runtime
            .block_on(async { tokio::time::timeout(BOUND, session.changed_since(since)).await })
            .expect("the other writer's token is picked up");
        assert_eq!(session.token(), Some(token));
    }
    // A write reads the file twice (the rename onto it, and the close of what was written),
    // the second one at least once by now; the 20 opens and reads, and the watch's own reads,
    // never.
    let read = reads() - 1;
    assert!(
        (3..=4).contains(&read),
        "the watch read the file {read} times for two changes"
    );
}

/// A watch whose directory goes away before its polling thread puts it in place is never put
/// there: the polling its callback started stays (before, the dead watch overwrote it, holding
/// its inotify instance until the directory was back, and filling the slot that a polling which
/// could not start leaves empty for the next explicit change). Another writer's token is seen
/// meanwhile, and a live watch takes the polling's place once the directory is back.
#[test]
#[cfg_attr(
    windows,
    ignore = "ReadDirectoryChangesW reports no event for the watched directory's own removal"
)]
fn a_watch_whose_directory_went_before_it_was_in_place_is_not_put_there() {
    let (runtime, dir) = runtime_and_dir();
    let file = TokenFile::in_dir(dir.path());
    let session = unwatched(&file);
    runtime.block_on(session.start()).unwrap();

    let watch = notification::watch(&session.shared, file.path()).unwrap();
    std::fs::remove_dir_all(dir.path()).unwrap();
    let polling = || matches!(*session.shared.watcher.lock().unwrap(), Some(Armed(None)));
    until(&runtime, "the watch's callback starts the polling", polling);
    // What the polling thread that made it does now.
    install(&session.shared, watch);
    assert!(
        polling(),
        "the dead watch is not put in place of the polling"
    );

    let since = session.epoch();
    let token = Token::new("b".repeat(40)).unwrap();
    TokenFile::in_dir(dir.path()).store(&token).unwrap();
    runtime
        .block_on(async { tokio::time::timeout(BOUND, session.changed_since(since)).await })
        .expect("the token that brings the directory back is picked up");
    assert_eq!(session.token(), Some(token));
    until(&runtime, "a new watch takes the polling's place", || {
        notified(&session)
    });
}

/// Waits, within [`BOUND`], for `condition`; panics with `what` otherwise.
fn until(runtime: &tokio::runtime::Runtime, what: &str, condition: impl Fn() -> bool) {
    runtime.block_on(async {
        tokio::time::timeout(BOUND, async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}"))
    });
}

const BOUND: Duration = Duration::from_secs(30);

/// A store that panics once in [`TokenStore::version`] when told to: a store of someone else's
/// that fails in the worst way.
struct PanicsOnce {
    inner: crate::store::MemoryStore,
    armed: Arc<AtomicBool>,
}

impl TokenStore for PanicsOnce {
    fn load(&self) -> Result<crate::store::Stored, Error> {
        self.inner.load()
    }
    fn store(&self, token: &Token) -> Result<crate::store::Version, Error> {
        self.inner.store(token)
    }
    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<crate::store::Swap, Error> {
        self.inner.swap(expected, new)
    }
    fn clear(&self) -> Result<(), Error> {
        self.inner.clear()
    }
    fn version(&self) -> Result<Option<crate::store::Version>, Error> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the store's own bug");
        }
        self.inner.version()
    }
}

/// A store that panics while the watch looks at it fails that look, not the watch: the same
/// watch goes on, and sees another writer's change with no explicit change to arm a new one.
/// (Before, the polling thread died of the panic and the session saw nothing until its next
/// explicit change.)
#[test]
fn a_store_that_panics_in_a_look_does_not_end_the_watch() {
    let (runtime, _dir) = runtime_and_dir();
    let memory = crate::store::MemoryStore::new();
    let panics = Arc::new(AtomicBool::new(false));
    let session = Session::builder(PanicsOnce {
        inner: memory.clone(),
        armed: Arc::clone(&panics),
    })
    .watch(Watch::Poll(Duration::from_millis(10)))
    .build();
    runtime.block_on(session.start()).unwrap();
    let armed = || session.shared.watcher.lock().unwrap().is_some();
    assert!(armed());

    panics.store(true, Ordering::SeqCst);
    until(&runtime, "the watch looks, and the store panics", || {
        !panics.load(Ordering::SeqCst)
    });
    let since = session.epoch();
    let second = Token::new("b".repeat(40)).unwrap();
    memory.store(&second).unwrap();
    runtime
        .block_on(async { tokio::time::timeout(BOUND, session.changed_since(since)).await })
        .expect("the same polling thread sees another writer's change");
    assert_eq!(session.token(), Some(second));
    assert!(armed(), "the watch is still in place");
}
