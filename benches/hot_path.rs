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
//! Goal: `c_session` within 1.10× of `b_add_authorization`, measured by paired rounds (printed
//! at the end: each round times both, back to back, so both see the same load), on the request
//! a tonic unary call makes (its `content-type`, `te` and `user-agent` headers) and on an empty
//! request, where the layer's fixed cost shows most. `d` is read against `d0`.
//!
//! Calls are polled by hand with a no-op waker: the futures are ready at once, so a runtime would
//! only add its own cost. The sessions' blocking work runs on a Tokio runtime entered here.

use std::hint::black_box;
use std::time::Instant;

use agent_session::{Session, SessionLayer};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::Layer;
use tower_http::auth::AddAuthorization;

mod support;
use support::{Ready, Refreshing, call, quick};

fn hot_path(c: &mut Criterion) {
    let runtime = support::blocking_runtime();
    let _entered = runtime.enter();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = support::token();

    let mut group = c.benchmark_group("hot_path");

    let mut bare = Ready;
    group.bench_function("a_bare", |b| {
        b.iter(|| black_box(call(&mut bare, Request::new(()))))
    });

    let mut add_authorization = AddAuthorization::bearer(Ready, token.expose()).as_sensitive(true);
    group.bench_function("b_add_authorization", |b| {
        b.iter(|| black_box(call(&mut add_authorization, Request::new(()))))
    });

    let session = Session::new(agent_session::TokenFile::new(dir.path().join("plain")));
    runtime
        .block_on(session.start_with_token(token.clone()))
        .expect("the session starts");
    let mut with_session = SessionLayer::new(session.clone()).layer(Ready);
    group.bench_function("c_session", |b| {
        b.iter(|| black_box(call(&mut with_session, Request::new(()))))
    });

    let mut bare_refreshing = Refreshing::default();
    group.bench_function("d0_bare_refreshing", |b| {
        b.iter(|| black_box(call(&mut bare_refreshing, Request::new(()))))
    });

    let behind = Session::builder(agent_session::TokenFile::new(dir.path().join("behind"))).build();
    runtime
        .block_on(behind.start_with_token(token.clone()))
        .expect("the session starts");
    let mut refreshing = SessionLayer::new(behind.clone()).layer(Refreshing::default());
    group.bench_function("d_session_refreshing", |b| {
        b.iter(|| black_box(call(&mut refreshing, Request::new(()))))
    });
    group.finish();

    paired_rounds(
        "an empty request",
        &mut add_authorization,
        &mut with_session,
        || Request::new(()),
    );
    paired_rounds(
        "a gRPC call's request headers",
        &mut add_authorization,
        &mut with_session,
        grpc_request,
    );

    runtime
        .block_on(behind.flush())
        .expect("the refreshes are written");
    eprintln!("d_session_refreshing: {:?}", behind.stats());
}

/// The goal's measure, robust to a busy machine: rounds of `CALLS` calls through
/// `AddAuthorization` and through the session layer, back to back and in alternating order, so
/// that both see the same load; the ratio of each round's times, its median over `ROUNDS`.
fn paired_rounds<A, S>(
    name: &str,
    add_authorization: &mut A,
    session: &mut S,
    request: impl Fn() -> Request<()>,
) where
    A: tower::Service<Request<()>>,
    A::Error: std::fmt::Debug,
    S: tower::Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    const ROUNDS: usize = 41;
    const CALLS: u32 = 200_000;
    let mut time_a = || {
        let started = Instant::now();
        for _ in 0..CALLS {
            black_box(call(add_authorization, request()));
        }
        started.elapsed()
    };
    let mut ratios = Vec::with_capacity(ROUNDS);
    let mut per_call = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut time_s = || {
            let started = Instant::now();
            for _ in 0..CALLS {
                black_box(call(session, request()));
            }
            started.elapsed()
        };
        let (a, s) = if round % 2 == 0 {
            let a = time_a();
            (a, time_s())
        } else {
            let s = time_s();
            (time_a(), s)
        };
        ratios.push(s.as_secs_f64() / a.as_secs_f64());
        per_call.push((a / CALLS, s / CALLS));
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[ROUNDS / 2];
    per_call.sort();
    let (a, s) = per_call[ROUNDS / 2];
    eprintln!(
        "paired rounds, {name} ({ROUNDS} x {CALLS} calls each): c_session / \
         b_add_authorization = {median:.3} (median; min {:.3}, max {:.3}); per call about {a:?} \
         vs {s:?}",
        sorted[0],
        sorted[ROUNDS - 1]
    );
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
