//! Group commit without timing: a store whose first refresh write is held until the test
//! releases it, so that every refresh accepted meanwhile is known to have arrived while a write
//! was under way. Those refreshes must share one write (the newest of them), however fast or
//! slow the machine is: two writes in all.
//!
//! `tests/transport.rs` checks the same over a real transport, where how many writes 64
//! refreshes share depends on scheduling, so it can only say "at least one, at most one each".

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use http::{HeaderValue, Request, Response, header};
use tower::{Layer as _, Service, ServiceExt as _};
use tower_agent_session::{
    Error, Session, SessionLayer, Token, store::MemoryStore, store::Stored, store::Swap,
    store::TokenStore, store::Version,
};

/// A [`MemoryStore`] whose first `swap` says so on `swapping` and waits for `release`.
#[derive(Clone)]
struct HeldStore {
    inner: MemoryStore,
    swaps: Arc<AtomicU64>,
    swapping: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl TokenStore for HeldStore {
    fn load(&self) -> Result<Stored, Error> {
        self.inner.load()
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        self.inner.store(token)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        self.swaps.fetch_add(1, Ordering::SeqCst);
        let release = self.release.lock().unwrap().take();
        if let Some(release) = release {
            let _ = self.swapping.send(());
            // On the session's blocking writer thread: nothing async waits on this.
            release.recv().expect("the test releases the held write");
        }
        self.inner.swap(expected, new)
    }

    fn clear(&self) -> Result<(), Error> {
        self.inner.clear()
    }

    fn version(&self) -> Result<Option<Version>, Error> {
        self.inner.version()
    }
}

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

/// An agent answering call `i` with the opaque token `r<i>` (1, 2, …): no JWT `exp`, so every
/// refresh is worth writing and none is skipped.
fn agent()
-> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    let counter = Arc::new(AtomicU64::new(1));
    tower::service_fn(move |_: Request<()>| {
        let i = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut response = Response::new(());
            response.headers_mut().insert(
                header::AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer r{i}")).unwrap(),
            );
            Ok::<_, Infallible>(response)
        }
    })
}

struct Held {
    store: HeldStore,
    session: Session,
    swapping: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: mpsc::Sender<()>,
}

async fn held(write_behind: bool) -> Held {
    let (swapping_tx, swapping) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = mpsc::channel();
    let store = HeldStore {
        inner: MemoryStore::new(),
        swaps: Arc::default(),
        swapping: swapping_tx,
        release: Arc::new(Mutex::new(Some(release_rx))),
    };
    let session = Session::builder(store.clone())
        .watch(tower_agent_session::Watch::Off)
        .agent_tokens(if write_behind {
            tower_agent_session::AgentTokens::LiveUntilExpiry
        } else {
            tower_agent_session::AgentTokens::RevokedOnRefresh
        })
        // The test holds the first write as long as it takes: no call may give up waiting.
        .call_wait(Duration::from_secs(3600))
        .build();
    session.start_with_token(token("t0")).await.unwrap();
    Held {
        store,
        session,
        swapping,
        release,
    }
}

const LATER: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_arriving_during_a_write_share_the_next_one_write_behind() {
    let mut held = held(true).await;
    let svc = SessionLayer::new(held.session.clone()).layer(agent());
    // Written behind: a call resolves once its refresh is accepted, so each `await` below
    // means "this refresh is in the session", with no look at its internals.
    svc.clone().oneshot(Request::new(())).await.unwrap();
    held.swapping.recv().await.expect("the first write starts");
    for _ in 0..LATER {
        svc.clone().oneshot(Request::new(())).await.unwrap();
    }
    held.release.send(()).unwrap();
    held.session.flush().await.unwrap();

    let stats = held.session.stats();
    assert_eq!(stats.refreshes, 1 + LATER, "{stats:?}");
    assert_eq!(
        (stats.writes, held.store.swaps.load(Ordering::SeqCst)),
        (2, 2),
        "the {LATER} refreshes that came during the first write share one: {stats:?}"
    );
    let newest = token(&format!("r{}", 1 + LATER));
    assert_eq!(held.store.inner.token(), Some(newest.clone()));
    assert_eq!(held.session.token(), Some(newest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_arriving_during_a_write_share_the_next_one_and_wait_for_it() {
    let mut held = held(false).await;
    let svc = SessionLayer::new(held.session.clone()).layer(agent());
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    held.swapping.recv().await.expect("the first write starts");
    let later: Vec<_> = (0..LATER)
        .map(|_| tokio::spawn(svc.clone().oneshot(Request::new(()))))
        .collect();
    // Each later call resolves only once a write covering it is done, which cannot be before
    // the release. Wait until all their refreshes are in: a loop on a count, not on time.
    while held.session.stats().refreshes < 1 + LATER {
        tokio::task::yield_now().await;
    }
    assert!(
        !first.is_finished() && later.iter().all(|call| !call.is_finished()),
        "a call resolved before its refresh was written"
    );
    held.release.send(()).unwrap();
    first.await.unwrap().unwrap();
    for call in later {
        call.await.unwrap().unwrap();
    }

    let stats = held.session.stats();
    assert_eq!(
        (stats.writes, held.store.swaps.load(Ordering::SeqCst)),
        (2, 2),
        "the {LATER} refreshes that came during the first write share one: {stats:?}"
    );
    // The later calls ran at once on two threads, so which of their refreshes was accepted last
    // is the scheduler's choice: the store holds that one, the one the session uses.
    let written = held.store.inner.token().expect("a token in the store");
    assert_eq!(Some(written.clone()), held.session.token());
    let later: Vec<Token> = (2..=1 + LATER).map(|i| token(&format!("r{i}"))).collect();
    assert!(
        later.contains(&written),
        "the shared write took a later refresh"
    );
}
