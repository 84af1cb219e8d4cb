//! A call reads the token in memory and nothing else: no look at the store (no `stat`, no
//! read), whatever the layer. A store that counts every call a session makes to it sees none in
//! many calls that bring no refresh, through both layers; the control, calls that bring a
//! refresh, does see the writes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tower::{Layer as _, Service, ServiceExt as _};
use tower_agent_session::{
    AgentTokens, BoxError, Error, Session, SessionLayer, Token, store::MemoryStore, store::Stored,
    store::Swap, store::TokenStore, store::Version,
};

const CALLS: u64 = 100;

/// A [`MemoryStore`] counting every call a session makes to it.
#[derive(Clone, Default)]
struct CountingStore {
    inner: MemoryStore,
    uses: Arc<AtomicU64>,
}

impl CountingStore {
    fn used(&self) {
        self.uses.fetch_add(1, Ordering::SeqCst);
    }
}

impl TokenStore for CountingStore {
    fn load(&self) -> Result<Stored, Error> {
        self.used();
        self.inner.load()
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        self.used();
        self.inner.store(token)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        self.used();
        self.inner.swap(expected, new)
    }

    fn clear(&self) -> Result<(), Error> {
        self.used();
        self.inner.clear()
    }

    fn version(&self) -> Result<Option<Version>, Error> {
        self.used();
        self.inner.version()
    }
}

async fn session() -> (Session, Arc<AtomicU64>) {
    let store = CountingStore::default();
    let versions = store.uses.clone();
    let session = Session::builder(store)
        // Every refresh written before its call completes: the control counts them.
        .agent_tokens(AgentTokens::RevokedOnRefresh)
        .build();
    session
        .start_with_token(Token::new("t0").unwrap())
        .await
        .unwrap();
    (session, versions)
}

/// An agent that answers at once: with no refreshed token (nothing the session writes), or
/// with a new opaque token on every response.
fn agent<B>(
    refreshing: bool,
) -> impl Service<
    Request<B>,
    Response = Response<http_body_util::Empty<bytes::Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    let counter = Arc::new(AtomicU64::new(0));
    tower::service_fn(move |_: Request<B>| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut response = Response::new(http_body_util::Empty::new());
            if refreshing {
                let value = format!("Bearer refreshed.{n}").parse().unwrap();
                response.headers_mut().insert("authorization", value);
            }
            Ok::<_, Infallible>(response)
        }
    })
}

/// `CALLS` calls, one after the other, through the plain layer; returns the store calls they
/// made.
async fn plain_calls(refreshing: bool) -> u64 {
    let (session, versions) = session().await;
    let before = versions.load(Ordering::SeqCst);
    let mut svc = SessionLayer::new(session).layer(agent::<()>(refreshing));
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
async fn reauth_calls(refreshing: bool) -> u64 {
    type Body = UnsyncBoxBody<Bytes, BoxError>;
    let (session, versions) = session().await;
    let before = versions.load(Ordering::SeqCst);
    let never = || async { Err::<Token, BoxError>("no re-authentication in this test".into()) };
    let mut svc = SessionLayer::new(session)
        .reauthenticate_with(never)
        .layer(agent::<Body>(refreshing));
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
async fn calls_without_a_refresh_never_touch_the_store() {
    assert_eq!(plain_calls(false).await, 0, "plain layer");
    assert_eq!(reauth_calls(false).await, 0, "re-authenticating layer");
}

#[tokio::test]
async fn calls_with_a_refresh_write_it() {
    // The control: the count does see the session's use of the store.
    assert!(plain_calls(true).await >= CALLS, "plain layer");
    assert!(reauth_calls(true).await >= CALLS, "re-authenticating layer");
}
