//! The hot path, in process: what one call costs through the session layer against what it
//! costs through tower-http's `AddAuthorization`, around a ready no-op inner service.
//!
//! - `a_bare`: the inner service alone.
//! - `b_add_authorization`: `AddAuthorization::bearer` with a static token, marked sensitive.
//! - `c_session`: `SessionLayer` with a token; the response carries no refresh. A default
//!   session, its file watched, as in real use.
//! - `d0_bare_refreshing`: an inner service that puts a new token on every response, alone.
//! - `d_session_refreshing`: `SessionLayer` over it (tokens live until they expire, the
//!   default): every response's token is parsed and kept, and a write goes to the background
//!   once a second (when `exp` moves on).
//!
//! Goal: `c_session` within 1.10× of `b_add_authorization`, measured by paired rounds, printed
//! at the end: each round times both sides, back to back in alternating order, so that both see
//! the same load. Each line gives the median of the rounds' ratios, and the ratio of each side's
//! fastest round (the cost with nothing else in the way). Two requests: the one a tonic unary
//! call makes (its `content-type`, `te` and `user-agent` headers) and an empty one, where a
//! layer's fixed cost shows most. Beside the goal's pair, two more show what the figures mean:
//!
//! - a control: `AddAuthorization` whose future is wrapped in one that holds an `Arc`, and does
//!   nothing else. That is the least any layer can do that acts on responses (as this one must,
//!   to take refreshes): its own future, and a handle to act with.
//! - like for like: `AddAuthorization` with tower-http's `SetSensitiveResponseHeaders` for
//!   `authorization`, which hides the response's credentials as this layer does.
//!
//! `d` is read against `d0`.
//!
//! Calls are polled by hand with a no-op waker: the futures are ready at once, so a runtime would
//! only add its own cost. The sessions' blocking work runs on a Tokio runtime entered here.
//!
//! Instruction counts, which unlike times do not move from one process run to the next: with
//! `HOT_PATH_LOOP` set to `add_authorization`, `hiding`, `wrapped`, `session` or `bare`, the
//! bench binary makes `HOT_PATH_CALLS` calls of that kind (`HOT_PATH_GRPC=1`: with a gRPC call's
//! headers) and exits, for `valgrind --tool=callgrind` (see `benches/README.md`). Three more
//! kinds measure what taking a token back costs: `refreshing`, `SessionLayer` over an inner
//! service that answers each call with a new token (one `exp` for all, so that the session
//! keeps every one and writes none); `bare_refreshing`, that inner service alone; and
//! `repeating`, `SessionLayer` over one that answers with the session's own token
//! (`bare_repeating` alone). A refresh taken costs (`refreshing` - `bare_refreshing`) -
//! (`session` - `bare`); a token brought back, (`repeating` - `bare_repeating`) - (`session` -
//! `bare`).

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, header};
use tower::{Layer, Service};
use tower_agent_session::{Session, SessionLayer};
use tower_http::auth::AddAuthorization;
use tower_http::sensitive_headers::SetSensitiveResponseHeaders;

mod support;
use support::{Ready, Refreshing, call, quick};

fn hot_path(c: &mut Criterion) {
    let runtime = support::blocking_runtime();
    let _entered = runtime.enter();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = support::token();

    let mut add_authorization = AddAuthorization::bearer(Ready, token.expose()).as_sensitive(true);
    let session = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("plain"),
    ));
    runtime
        .block_on(session.start_with_token(token.clone()))
        .expect("the session starts");
    let mut with_session = SessionLayer::new(session.clone()).layer(Ready);
    let mut wrapped = Wrapped {
        inner: add_authorization.clone(),
        handle: Arc::new(()),
    };
    let mut hiding = SetSensitiveResponseHeaders::new(
        add_authorization.clone(),
        std::iter::once(header::AUTHORIZATION),
    );

    // A session whose every call brings a new token back, all with the session token's `exp`.
    let exp = token
        .expires_at()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_secs());
    let kept = Session::new(tower_agent_session::TokenFile::new(dir.path().join("kept")));
    runtime
        .block_on(kept.start_with_token(token.clone()))
        .expect("the session starts");
    let mut bare_kept = Refreshing::expiring_at(exp);
    let mut keeping = SessionLayer::new(kept.clone()).layer(bare_kept.clone());
    let mut bare_repeating = Repeating(token.header_value());
    let mut repeating = SessionLayer::new(session.clone()).layer(bare_repeating.clone());

    if let Ok(kind) = std::env::var("HOT_PATH_LOOP") {
        let calls: u64 = std::env::var("HOT_PATH_CALLS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let request = if std::env::var_os("HOT_PATH_GRPC").is_some() {
            grpc_request
        } else {
            empty_request
        };
        for _ in 0..calls {
            match kind.as_str() {
                "add_authorization" => drop(black_box(call(&mut add_authorization, request()))),
                "hiding" => drop(black_box(call(&mut hiding, request()))),
                "wrapped" => drop(black_box(call(&mut wrapped, request()))),
                "session" => drop(black_box(call(&mut with_session, request()))),
                "refreshing" => drop(black_box(call(&mut keeping, request()))),
                "bare_refreshing" => drop(black_box(call(&mut bare_kept, request()))),
                "repeating" => drop(black_box(call(&mut repeating, request()))),
                "bare_repeating" => drop(black_box(call(&mut bare_repeating, request()))),
                _ => drop(black_box(call(&mut Ready, request()))),
            }
        }
        if kind == "refreshing" {
            let stats = kept.stats();
            eprintln!("refreshing: {stats:?}");
        }
        return;
    }

    let mut group = c.benchmark_group("hot_path");

    let mut bare = Ready;
    group.bench_function("a_bare", |b| {
        b.iter(|| black_box(call(&mut bare, Request::new(()))))
    });
    group.bench_function("b_add_authorization", |b| {
        b.iter(|| black_box(call(&mut add_authorization, Request::new(()))))
    });
    group.bench_function("c_session", |b| {
        b.iter(|| black_box(call(&mut with_session, Request::new(()))))
    });

    let mut bare_refreshing = Refreshing::default();
    group.bench_function("d0_bare_refreshing", |b| {
        b.iter(|| black_box(call(&mut bare_refreshing, Request::new(()))))
    });

    let behind = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("behind"),
    ))
    .build();
    runtime
        .block_on(behind.start_with_token(token.clone()))
        .expect("the session starts");
    let mut refreshing = SessionLayer::new(behind.clone()).layer(Refreshing::default());
    group.bench_function("d_session_refreshing", |b| {
        b.iter(|| black_box(call(&mut refreshing, Request::new(()))))
    });
    group.finish();

    for (name, request) in [
        ("an empty request", empty_request as fn() -> Request<()>),
        ("a gRPC call's request", grpc_request),
    ] {
        eprintln!("paired rounds, {name}:");
        paired_rounds(
            "SessionLayer / AddAuthorization (the goal)",
            &mut add_authorization,
            &mut with_session,
            request,
        );
        paired_rounds(
            "control: AddAuthorization in a future holding an Arc / AddAuthorization",
            &mut add_authorization,
            &mut wrapped,
            request,
        );
        paired_rounds(
            "SessionLayer / AddAuthorization + SetSensitiveResponseHeaders",
            &mut hiding,
            &mut with_session,
            request,
        );
    }

    runtime
        .block_on(behind.flush())
        .expect("the refreshes are written");
    eprintln!("d_session_refreshing: {:?}", behind.stats());
}

/// The goal's measure, robust to a busy machine: `ROUNDS` rounds of `CALLS` calls through
/// `baseline` and through `measured`, back to back and in alternating order, so that both see
/// the same load. Prints the median of each round's ratio of times, and the ratio of each
/// side's fastest round: short rounds, many of them, so that some of each side run undisturbed.
fn paired_rounds<A, S>(name: &str, baseline: &mut A, measured: &mut S, request: fn() -> Request<()>)
where
    A: Service<Request<()>>,
    A::Error: std::fmt::Debug,
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    const ROUNDS: usize = 1001;
    const CALLS: u32 = 2_000;
    fn time<T: Service<Request<()>>>(service: &mut T, request: fn() -> Request<()>) -> Duration
    where
        T::Error: std::fmt::Debug,
    {
        let started = Instant::now();
        for _ in 0..CALLS {
            drop(black_box(call(service, request())));
        }
        started.elapsed() / CALLS
    }
    let mut ratios = Vec::with_capacity(ROUNDS);
    let (mut fastest_a, mut fastest_s) = (Duration::MAX, Duration::MAX);
    for round in 0..ROUNDS {
        let (a, s) = if round % 2 == 0 {
            let a = time(baseline, request);
            (a, time(measured, request))
        } else {
            let s = time(measured, request);
            (time(baseline, request), s)
        };
        ratios.push(s.as_secs_f64() / a.as_secs_f64());
        fastest_a = fastest_a.min(a);
        fastest_s = fastest_s.min(s);
    }
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "  {name}: {:.3} (median of {ROUNDS} rounds of {CALLS} calls; fastest rounds {:.3}: \
         {fastest_s:?} vs {fastest_a:?} a call)",
        ratios[ROUNDS / 2],
        fastest_s.as_secs_f64() / fastest_a.as_secs_f64(),
    );
}

fn empty_request() -> Request<()> {
    Request::new(())
}

/// A request with the headers tonic puts on a unary call.
fn grpc_request() -> Request<()> {
    Request::builder()
        .method("POST")
        .uri("http://127.0.0.1:50051/agent.v1.AgentService/AgentStatus")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "tonic/0.14")
        .body(())
        .expect("a request")
}

criterion_group! {
    name = benches;
    config = quick();
    targets = hot_path
}
criterion_main!(benches);

/// The control: `inner`'s future wrapped in one that holds a handle (an `Arc`) and does nothing
/// else with it; the least a layer that acts on responses costs.
struct Wrapped<S> {
    inner: S,
    handle: Arc<()>,
}

impl<S> Service<Request<()>> for Wrapped<S>
where
    S: Service<Request<()>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WrappedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        WrappedFuture {
            future: self.inner.call(request),
            _handle: self.handle.clone(),
        }
    }
}

struct WrappedFuture<F> {
    future: F,
    _handle: Arc<()>,
}

impl<F: Future + Unpin> Future for WrappedFuture<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        Pin::new(&mut self.future).poll(cx)
    }
}

/// Answers every call at once with `authorization: <its value>`: the token in use, brought back
/// as an agent that refreshes once a second does for every other call of that second.
#[derive(Clone)]
struct Repeating(HeaderValue);

impl Service<Request<()>> for Repeating {
    type Response = Response<()>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Response<()>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(header::AUTHORIZATION, self.0.clone());
        std::future::ready(Ok(response))
    }
}
