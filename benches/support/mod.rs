//! What the benches share: ready services, a poll loop without a runtime, JWT-shaped tokens, and
//! settings quick enough for `cargo bench` to run every bench in minutes on two cores.
#![allow(dead_code)] // each bench uses its own part of this

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use criterion::Criterion;
use http::{HeaderValue, Request, Response, header};
use tower::Service;
use tower_agent_session::Token;

/// Criterion settings for the in-process benches: a call costs nanoseconds, so a second of
/// warm-up and three of measurement give tight intervals and keep the whole run short.
pub fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

/// Drives `future` to completion on this thread, polling it with a no-op waker. Ready futures
/// (the hot path) complete on the first poll; one waiting on a blocking task is polled again
/// after a yield.
pub fn spin_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// One call through `service`: driven ready, called, and its future polled to the end, all
/// without a runtime.
pub fn call<S, B>(service: &mut S, request: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match service.poll_ready(&mut cx) {
            Poll::Ready(ready) => break ready.expect("the service is ready"),
            Poll::Pending => std::thread::yield_now(),
        }
    }
    spin_on(service.call(request)).expect("the call succeeds")
}

/// A service that answers every request at once with an empty response: the cheapest inner
/// service there is, so that what is measured is the layer around it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready;

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

/// Like [`Ready`], but each response carries a new refreshed token, as the agent's do: a
/// JWT-shaped token with a unique `jti` and an `exp` one hour from now, so the `exp` moves on
/// once a second. (Unsigned: only the agent checks signatures, and minting real ones would put
/// HMAC in the numbers.)
#[derive(Debug, Clone, Default)]
pub struct Refreshing {
    minted: Arc<AtomicU64>,
    /// Tokens made before the calls, all with one `exp` instead of one hour from now, handed
    /// out in turn: a session then keeps each refresh and writes none, so that a count of
    /// instructions does not depend on how many seconds a run took (a write-behind session
    /// writes once a second, whatever the calls). Made before, so that the calls count no
    /// formatting, and no allocation whose cost moves with what the layer allocated.
    made: Option<Arc<[HeaderValue]>>,
}

impl Refreshing {
    /// Every token with `exp` as its expiry: 1024 of them, each unlike the one before.
    pub fn expiring_at(exp: u64) -> Self {
        Self {
            made: Some((0..1024).map(|jti| bearer(&jwt(exp, jti))).collect()),
            ..Self::default()
        }
    }
}

/// `Bearer <token>`, sensitive, as an agent's response holds it.
fn bearer(token: &str) -> HeaderValue {
    let mut header =
        HeaderValue::try_from(format!("Bearer {token}")).expect("a JWT is a header value");
    header.set_sensitive(true);
    header
}

impl<B> Service<Request<B>> for Refreshing {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        let jti = self.minted.fetch_add(1, Ordering::Relaxed);
        let header = match &self.made {
            Some(made) => made[jti as usize % made.len()].clone(),
            None => bearer(&jwt(unix_now() + 3600, jti)),
        };
        let mut response = Response::new(());
        response.headers_mut().insert(header::AUTHORIZATION, header);
        std::future::ready(Ok(response))
    }
}

/// A JWT-shaped token (`header.payload.signature`) whose payload is `{"iat":…,"exp":…,"jti":…}`,
/// as the agent mints them (`iat` an hour before `exp`).
pub fn jwt(exp: u64, jti: u64) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let iat = exp.saturating_sub(3600);
    let payload = b64.encode(format!(r#"{{"iat":{iat},"exp":{exp},"jti":"{jti:032x}"}}"#));
    // {"alg":"HS256","typ":"JWT"}, and 32 bytes of signature.
    format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{payload}.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbg"
    )
}

/// A token like the agent's, valid for an hour.
pub fn token() -> Token {
    Token::new(jwt(unix_now() + 3600, 0)).expect("a JWT is a token")
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A Tokio runtime for the sessions' blocking work (file checks and writes); the calls
/// themselves are polled by hand on the bench's thread.
pub fn blocking_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}
