//! A store of the user's own that wraps the session file keeps what the file shares with other
//! processes: the OS's notification of another process's change, and the re-authentication
//! lock a lock all holds. Before, the session found both by a downcast to `TokenFile`, and a
//! wrapper lost them silently.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tower_agent_session::store::{Stored, Swap, TokenStore, Version};
use tower_agent_session::{Error, ReauthLock, Session, Token, TokenFile, Watch};

/// The session file, with every write counted: a store of the user's own.
struct Counted {
    file: TokenFile,
    writes: Arc<AtomicUsize>,
}

impl TokenStore for Counted {
    fn load(&self) -> Result<Stored, Error> {
        self.file.load()
    }
    fn store(&self, token: &Token) -> Result<Version, Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.file.store(token)
    }
    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.file.swap(expected, new)
    }
    fn clear(&self) -> Result<(), Error> {
        self.file.clear()
    }
    fn version(&self) -> Result<Option<Version>, Error> {
        self.file.version()
    }
    fn watched_file(&self) -> Option<PathBuf> {
        self.file.watched_file()
    }
    fn reauth_lock(&self) -> Option<ReauthLock> {
        self.file.reauth_lock()
    }
}

const BOUND: Duration = Duration::from_secs(30);

fn counted(file: &TokenFile) -> Counted {
    Counted {
        file: file.clone(),
        writes: Arc::default(),
    }
}

/// Notified, not polled: with `Watch::Notify` a store that names no file is not watched at all,
/// so the change is seen only because the wrapper names the session file.
#[tokio::test]
async fn a_wrapped_session_file_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    let session = Session::builder(counted(&file))
        .watch(Watch::Notify)
        .build();
    session.start().await.unwrap();
    let since = session.epoch();
    let other = Session::builder(file.clone()).watch(Watch::Off).build();
    other
        .start_with_token(Token::new("b".repeat(40)).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(BOUND, session.changed_since(since))
        .await
        .expect("another process's write is seen through the wrapper");
    assert_eq!(session.token(), Some(Token::new("b".repeat(40)).unwrap()));
}

/// A lock all through the wrapper holds the file's re-authentication lock while `end_all`
/// runs.
#[tokio::test]
async fn a_lock_all_through_a_wrapper_holds_the_files_lock() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    let store = counted(&file);
    let writes = store.writes.clone();
    let session = Session::builder(store).watch(Watch::Off).build();
    session
        .start_with_token(Token::new("a".repeat(40)).unwrap())
        .await
        .unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1, "the wrapper's store ran");
    let lock_path = file
        .reauth_lock()
        .expect("the file has one")
        .path()
        .to_owned();
    let (inside_tx, inside) = oneshot::channel::<()>();
    let (go_tx, go) = oneshot::channel::<()>();
    let lock_all = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .clear_after(async move {
                    let _ = inside_tx.send(());
                    let _ = go.await;
                    Ok::<(), Error>(())
                })
                .await
        }
    });
    tokio::time::timeout(BOUND, inside).await.unwrap().unwrap();
    let probe = std::fs::File::open(&lock_path).unwrap();
    assert!(
        matches!(probe.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "the re-authentication lock is held while end_all runs"
    );
    go_tx.send(()).unwrap();
    tokio::time::timeout(BOUND, lock_all)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    probe
        .try_lock()
        .expect("the lock is let go once the lock all is over");
}
