//! How often a session looks for another process's change: at most once per
//! `check_interval`, never on every call. A store that counts its `version()` calls (the
//! `stat` of the session file) sees none in many calls made well inside one long interval, and
//! exactly one per call with `Duration::ZERO`, through both layers.
//!
//! The long interval is an hour, so that the test does not depend on how fast the machine is.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_session::{
    BoxError, Error, MemoryStore, Session, SessionLayer, Stored, Swap, Token, TokenStore,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tower::{Layer as _, Service, ServiceExt as _};

const CALLS: u64 = 100;

/// A [`MemoryStore`] counting the looks a session takes at it.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryStore,
    versions: Arc<AtomicU64>,
}

impl TokenStore for CountingStore {
    type Version = u64;

    fn load(&self) -> Result<Stored<u64>, Error> {
        self.inner.load()
    }

    fn store(&self, token: &Token) -> Result<u64, Error> {
        self.inner.store(token)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap<u64>, Error> {
        self.inner.swap(expected, new)
    }

    fn clear(&self) -> Result<(), Error> {
        self.inner.clear()
    }

    fn version(&self) -> Result<Option<u64>, Error> {
        self.versions.fetch_add(1, Ordering::SeqCst);
        self.inner.version()
    }
}

async fn session(interval: Duration) -> (Session<CountingStore>, Arc<AtomicU64>) {
    let store = CountingStore::default();
    let versions = store.versions.clone();
    let session = Session::builder_with_store(store)
        .check_interval(interval)
        .build();
    session
        .start_with_token(Token::new("t0").unwrap())
        .await
        .unwrap();
    (session, versions)
}

/// An agent that answers at once, with no refreshed token (nothing the session writes).
fn agent<B>() -> impl Service<
    Request<B>,
    Response = Response<http_body_util::Empty<bytes::Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(|_: Request<B>| async {
        Ok::<_, Infallible>(Response::new(http_body_util::Empty::new()))
    })
}

/// `CALLS` calls, one after the other, through the plain layer; returns the looks they took.
async fn plain_calls(interval: Duration) -> u64 {
    let (session, versions) = session(interval).await;
    let before = versions.load(Ordering::SeqCst);
    let mut svc = SessionLayer::new(session).layer(agent::<()>());
    for _ in 0..CALLS {
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    versions.load(Ordering::SeqCst) - before
}

/// The same through the layer with re-authentication on.
async fn reauth_calls(interval: Duration) -> u64 {
    type Body = UnsyncBoxBody<Bytes, BoxError>;
    let (session, versions) = session(interval).await;
    let before = versions.load(Ordering::SeqCst);
    let never = || async { Err::<Token, BoxError>("no re-authentication in this test".into()) };
    let mut svc = SessionLayer::new(session)
        .reauthenticate_with(never)
        .layer(agent::<Body>());
    for _ in 0..CALLS {
        let body: Body = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(body))
            .await
            .unwrap();
    }
    versions.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn calls_inside_one_interval_never_look_at_the_store() {
    let hour = Duration::from_secs(3600);
    assert_eq!(plain_calls(hour).await, 0, "plain layer");
    assert_eq!(reauth_calls(hour).await, 0, "re-authenticating layer");
}

#[tokio::test]
async fn a_zero_interval_looks_once_per_call() {
    // The control: the count does see looks.
    assert_eq!(plain_calls(Duration::ZERO).await, CALLS, "plain layer");
    assert_eq!(
        reauth_calls(Duration::ZERO).await,
        CALLS,
        "re-authenticating layer"
    );
}
