//! The hot path, in process: what one call costs through the session layer against what it
//! costs through tower-http's `AddAuthorization`, around a ready no-op inner service.
//!
//! - `a_bare`: the inner service alone.
//! - `b_add_authorization`: `AddAuthorization::bearer` with a static token, marked sensitive.
//! - `c_session`: `SessionLayer` with a token; the response carries no refresh. A default
//!   session: once a second a call looks at the session file first, as in real use.
//! - `d0_bare_refreshing`: an inner service that puts a new token on every response, alone.
//! - `d_session_refreshing`: `SessionLayer` over it, write-behind: every response's token is
//!   parsed and kept, and a write goes to the background once a second (when `exp` moves on).
//!
//! Goal: `c_session` within 1.10× of `b_add_authorization`. `d` is read against `d0`.
//!
//! Calls are polled by hand with a no-op waker: the futures are ready at once, so a runtime would
//! only add its own cost. The sessions' blocking work runs on a Tokio runtime entered here.

use std::hint::black_box;

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

    runtime
        .block_on(behind.flush())
        .expect("the refreshes are written");
    eprintln!("d_session_refreshing: {:?}", behind.stats());
}

criterion_group! {
    name = benches;
    config = quick();
    targets = hot_path
}
criterion_main!(benches);
