//! A store of the user's own that panics (a bug of theirs, an `unwrap` on an I/O error) fails
//! the operation it was asked for, with an error: nothing waits for it forever, and the
//! session goes on with the store's next operations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_agent_session::store::{MemoryStore, Stored, Swap, TokenStore, Version};
use tower_agent_session::{Error, Session, Token};

/// The bound on each step of these tests: far longer than any store operation here takes, so
/// that only a wait that never ends reaches it.
const BOUND: Duration = Duration::from_secs(20);

/// A [`MemoryStore`] whose next call of one method panics: only that method's, so that the
/// session's other work meanwhile (a read after a failed write, say) is not the one to panic.
#[derive(Clone, Default)]
struct PanickingStore {
    inner: MemoryStore,
    next: Arc<Mutex<Option<&'static str>>>,
}

impl PanickingStore {
    fn panic_next(&self, method: &'static str) {
        *self.next.lock().unwrap() = Some(method);
    }

    fn maybe_panic(&self, method: &'static str) {
        let mut next = self.next.lock().unwrap();
        if *next == Some(method) {
            *next = None;
            drop(next);
            panic!("the store's own bug, in {method}");
        }
    }
}

impl TokenStore for PanickingStore {
    fn load(&self) -> Result<Stored, Error> {
        self.maybe_panic("load");
        self.inner.load()
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        self.maybe_panic("store");
        self.inner.store(token)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        self.maybe_panic("swap");
        self.inner.swap(expected, new)
    }

    fn clear(&self) -> Result<(), Error> {
        self.maybe_panic("clear");
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

    store.panic_next("load");
    let started = bounded("start", session.start()).await;
    assert!(matches!(started, Err(Error::Store(_))), "{started:?}");
    bounded("start again", session.start()).await.unwrap();

    store.panic_next("store");
    let unlocked = bounded("an unlock", session.start_with_token(token("one"))).await;
    assert!(matches!(unlocked, Err(Error::Store(_))), "{unlocked:?}");
    assert_eq!(session.token(), Some(token("one")), "in use all the same");

    bounded("the next write", session.start_with_token(token("two")))
        .await
        .unwrap();
    assert_eq!(store.inner.token(), Some(token("two")));

    store.panic_next("clear");
    let cleared = bounded("a lock", session.clear()).await;
    assert!(matches!(cleared, Err(Error::Store(_))), "{cleared:?}");
    bounded("a lock again", session.clear()).await.unwrap();
    assert_eq!(store.inner.token(), None);
}
