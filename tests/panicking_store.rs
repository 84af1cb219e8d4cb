//! A store of the user's own that panics (a bug of theirs, an `unwrap` on an I/O error) fails
//! the operation it was asked for, with an error: nothing waits for it forever, and the
//! session goes on with the store's next operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent_session::store::{MemoryStore, Stored, Swap, TokenStore, Version};
use agent_session::{Error, Session, Token};

/// The bound on each step of these tests: far longer than any store operation here takes, so
/// that only a wait that never ends reaches it.
const BOUND: Duration = Duration::from_secs(20);

/// A [`MemoryStore`] whose next `panics` operations panic.
#[derive(Clone, Default)]
struct PanickingStore {
    inner: MemoryStore,
    panics: Arc<AtomicU32>,
}

impl PanickingStore {
    fn panic_next(&self, times: u32) {
        self.panics.store(times, Ordering::SeqCst);
    }

    fn maybe_panic(&self) {
        let left = self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_ok() {
            panic!("the store's own bug");
        }
    }
}

impl TokenStore for PanickingStore {
    fn load(&self) -> Result<Stored, Error> {
        self.maybe_panic();
        self.inner.load()
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        self.maybe_panic();
        self.inner.store(token)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        self.maybe_panic();
        self.inner.swap(expected, new)
    }

    fn clear(&self) -> Result<(), Error> {
        self.maybe_panic();
        self.inner.clear()
    }

    fn version(&self) -> Result<Option<Version>, Error> {
        self.inner.version()
    }
}

fn token(text: &str) -> Token {
    Token::new(text).unwrap()
}

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} waits for a store that panicked"))
}

#[tokio::test]
async fn a_store_that_panics_fails_its_operation_and_the_next_ones_run() {
    let store = PanickingStore::default();
    let session = Session::builder(store.clone()).build();

    store.panic_next(1);
    let started = bounded("start", session.start()).await;
    assert!(matches!(started, Err(Error::Store(_))), "{started:?}");
    bounded("start again", session.start()).await.unwrap();

    store.panic_next(1);
    let unlocked = bounded("an unlock", session.start_with_token(token("one"))).await;
    assert!(matches!(unlocked, Err(Error::Store(_))), "{unlocked:?}");
    assert_eq!(session.token(), Some(token("one")), "in use all the same");

    bounded("the next write", session.start_with_token(token("two")))
        .await
        .unwrap();
    assert_eq!(store.inner.token(), Some(token("two")));

    store.panic_next(1);
    let cleared = bounded("a lock", session.clear()).await;
    assert!(matches!(cleared, Err(Error::Store(_))), "{cleared:?}");
    bounded("a lock again", session.clear()).await.unwrap();
    assert_eq!(store.inner.token(), None);
}
