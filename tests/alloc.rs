//! The session layer allocates nothing per call beyond what a static header costs: a call with
//! a token and no refresh in the response makes no more heap allocations through `SessionLayer`
//! than through tower-http's `AddAuthorization` (the header map's own allocation when the
//! `authorization` header is inserted).
//!
//! A counting global allocator counts the allocations of the thread that asks, while it asks,
//! so tests running beside on other threads do not disturb the count. Calls are polled by hand
//! on that thread with a no-op waker: the inner service is ready at once, so nothing else runs.
// The thread-locals are const already: clippy 1.96 says otherwise for Windows targets, whose
// `thread_local!` expands differently.
#![cfg_attr(windows, allow(clippy::missing_const_for_thread_local))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower::{Layer, Service};
use tower_agent_session::{Session, SessionLayer, Token};
use tower_http::auth::AddAuthorization;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is passed to `System` unchanged; counting touches only const-initialised
// thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 100;
const CALLS: u64 = 1000;

/// Allocations made by this thread while `work` runs.
fn allocations(work: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    work();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// A service that answers at once with an empty response.
#[derive(Clone, Copy)]
struct Ready;

impl<B> Service<Request<B>> for Ready {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

/// One call, driven ready and polled to the end by hand; it must be ready at once.
fn call<S>(service: &mut S)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(ready) = service.poll_ready(&mut cx) else {
        panic!("the service is not ready");
    };
    ready.expect("the service is ready");
    let future = pin!(service.call(Request::new(())));
    let Poll::Ready(response) = future.poll(&mut cx) else {
        panic!("the call did not complete at once");
    };
    drop(response.expect("the call succeeds"));
}

/// Allocations of `CALLS` calls through `service`, after a warm-up.
fn per_calls<S>(mut service: S) -> u64
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..WARM_UP {
        call(&mut service);
    }
    allocations(|| {
        for _ in 0..CALLS {
            call(&mut service);
        }
    })
}

/// A session holding a JWT-shaped token that looks at its file only once an hour: the look is a
/// once-an-interval cost (a blocking task), not a per-call one.
fn session(dir: &std::path::Path) -> Session {
    let token = Token::new(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJlc2lnbmF0dXJl",
    )
    .unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(dir.join("token")))
        .watch(tower_agent_session::Watch::Off)
        .build();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(session.start_with_token(token))
        .unwrap();
    session
}

#[test]
fn a_session_call_allocates_no_more_than_a_static_header() {
    let dir = tempfile::tempdir().unwrap();
    let session = session(dir.path());
    let token = session.token().unwrap();

    let bare = per_calls(Ready);
    let static_header =
        per_calls(AddAuthorization::bearer(Ready, token.expose()).as_sensitive(true));
    let with_session = per_calls(SessionLayer::new(session.clone()).layer(Ready));
    eprintln!(
        "allocations in {CALLS} calls: bare {bare}, AddAuthorization {static_header}, \
         SessionLayer {with_session}"
    );

    assert!(
        static_header > bare,
        "the counter sees the header map's allocation ({static_header} vs {bare})"
    );
    assert!(
        with_session <= static_header,
        "SessionLayer allocated {with_session} times in {CALLS} calls, AddAuthorization \
         {static_header}: {} more per call",
        (with_session - static_header) as f64 / CALLS as f64
    );
}

/// The comparison above can fail: one `Box` per call is seen.
#[test]
fn one_box_per_call_is_counted() {
    #[derive(Clone)]
    struct Boxing<S>(S);

    impl<S> Service<Request<()>> for Boxing<S>
    where
        S: Service<Request<()>>,
        S::Future: 'static,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>>>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: Request<()>) -> Self::Future {
            Box::pin(self.0.call(request))
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let session = session(dir.path());
    let plain = per_calls(SessionLayer::new(session.clone()).layer(Ready));
    let boxed = per_calls(Boxing(SessionLayer::new(session.clone()).layer(Ready)));
    assert!(
        boxed >= plain + CALLS,
        "a Box per call shows: {boxed} vs {plain}"
    );
}
