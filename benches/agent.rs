//! The agent side, in process: what `AuthLayer` costs per call around a ready no-op inner
//! service, against a pass-through server layer. Every request carries a valid token.
//!
//! - `a_pass_through`: the inner service alone (what a server without token checks runs).
//! - `b_auth_verify`: `AuthLayer` verifying the token, with the path set not to refresh.
//! - `c_auth_verify_mint`: `AuthLayer` verifying the token and minting a refreshed one, as the
//!   agent does on every call.
//! - `d_manager_mint`: `SessionManager::mint` alone, a `Token` out.
//! - `e_manager_verify`: `SessionManager::verify` alone, of a `Token` already made (the layer
//!   also reads the token from the request's header, which `b_auth_verify` includes).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Uri, header};
use http_body_util::Empty;
use tower::Layer;
use tower::layer::util::Identity;
use tower_agent_session::proto::ECHO_PATH;
use tower_agent_session_agent::{AuthLayer, SessionManager};

mod support;
use support::{Ready, call, quick};

/// A request with an empty body: what is measured is the token check. (`AuthService` takes a
/// request body that is an `http_body::Body`: it reads a refused call's to its end.)
fn request(uri: &Uri, authorization: &HeaderValue) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri.clone();
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, authorization.clone());
    request
}

fn agent(c: &mut Criterion) {
    let manager = SessionManager::new().expect("a session manager");
    let token = manager.mint().expect("a token");
    let authorization = token.header_value();
    let uri = Uri::from_static(ECHO_PATH);

    let mut group = c.benchmark_group("agent");

    let mut pass_through = Identity::new().layer(Ready);
    group.bench_function("a_pass_through", |b| {
        b.iter(|| black_box(call(&mut pass_through, request(&uri, &authorization))))
    });

    let mut verify = AuthLayer::new(manager.clone())
        .no_refresh_path(ECHO_PATH)
        .layer(Ready);
    let checked = call(&mut verify, request(&uri, &authorization));
    assert_eq!(checked.status(), 200, "the token is accepted");
    assert!(!checked.headers().contains_key(header::AUTHORIZATION));
    group.bench_function("b_auth_verify", |b| {
        b.iter(|| black_box(call(&mut verify, request(&uri, &authorization))))
    });

    let mut verify_mint = AuthLayer::new(manager.clone()).layer(Ready);
    let refreshed = call(&mut verify_mint, request(&uri, &authorization));
    assert_eq!(refreshed.status(), 200, "the token is accepted");
    assert!(refreshed.headers().contains_key(header::AUTHORIZATION));
    group.bench_function("c_auth_verify_mint", |b| {
        b.iter(|| black_box(call(&mut verify_mint, request(&uri, &authorization))))
    });

    group.bench_function("d_manager_mint", |b| {
        b.iter(|| black_box(manager.mint().expect("a token")))
    });
    group.bench_function("e_manager_verify", |b| {
        b.iter(|| black_box(manager.verify(black_box(&token))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = quick();
    targets = agent
}
criterion_main!(benches);
