//! The agent's `SessionManager::verify` and its `AuthLayer`: no forgery. A token is accepted
//! exactly when a reference HMAC-SHA-256 with the agent's key, over `header.claims`, is its
//! signature (canonical base64url), its header (a JSON object naming each member once) names
//! HS256 and its claims' `exp` is a time (at most `i64::MAX` seconds) that has not passed (with
//! the agent's 2 s of leeway). Through the layer a call reaches the service only with such a
//! token, and comes back with a refresh that is one; the cache of verified tokens never lets a
//! forged or expired one through, before or after its valid counterpart.
//!
//! Input: a flags byte, then up to four lines: the header, the claims, the signature, a
//! mutation. Bit 0: the header line is the header's text (else JSON, encoded here); bit 1: the
//! same for the claims; bit 2: the signature line is the signature (else the reference's);
//! bit 3: the validly signed counterpart goes through the layer first; bit 4: a gRPC call;
//! bit 5: the call carries the counterpart too, in a second `authorization`; bits 6 and 7: the
//! mutation of the token (none, a byte replaced, cut, bytes inserted) at the position in the
//! mutation line's first two bytes, with its other bytes.

#![no_main]

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit as _, Mac as _};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use libfuzzer_sys::fuzz_target;
use tower::{Layer as _, Service as _};
use tower_agent_session::Token;
use tower_agent_session_agent::{AuthLayer, SessionManager};

mod bounded;
mod reference;

#[global_allocator]
static GLOBAL: bounded::Counting = bounded::Counting;

/// The agent's key, known to the reference.
const KEY: &[u8; 32] = b"agent-session fuzz key, 32 bytes";

/// `{"alg":"HS256","typ":"JWT"}`, the header the agent mints.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The grace the agent gives past `exp` (`DEFAULT_LEEWAY`).
const LEEWAY: u64 = 2;

/// The key file, written once (mode 0600, as the agent demands) and read by every manager.
fn key_file() -> &'static PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &FILE
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("key");
            std::fs::write(&path, KEY).expect("the key file is written");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            (dir, path)
        })
        .1
}

/// The reference signature of `message`: HMAC-SHA-256 with [`KEY`], base64url unpadded.
fn sign(message: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).expect("any key length");
    mac.update(message);
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject,
    /// `exp` within a second of the edge: the agent's clock and ours may read differently.
    Close,
}

/// Whether the agent must take `text` at `now`: a JWS of three parts whose header is a JSON
/// object with `"alg":"HS256"` and no member named twice, signed by [`sign`], whose claims'
/// `exp` is a time (at most `i64::MAX` seconds) that is not past.
fn reference(text: &[u8], now: u64) -> Verdict {
    if !reference::is_b64token(text) {
        return Verdict::Reject;
    }
    let text = std::str::from_utf8(text).expect("a b64token is ASCII");
    let parts: Vec<&str> = text.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Verdict::Reject;
    };
    let hs256 = header == HEADER
        || URL_SAFE_NO_PAD.decode(header).is_ok_and(|json| {
            reference::names_each_member_once(&json)
                && matches!(reference::member(&json, "alg"), Ok(Some(serde_json::Value::String(alg))) if alg == "HS256")
        });
    if !hs256 || signature != sign(format!("{header}.{claims}").as_bytes()) {
        return Verdict::Reject;
    }
    match reference::jwt_exp(text) {
        // An `exp` past what a `SystemTime` holds is no time: refused, however it is signed
        // (the agent never mints one; issue 26, item 8).
        Some(exp) if i64::try_from(exp).is_err() => Verdict::Reject,
        Some(exp) if exp.abs_diff(now.saturating_sub(LEEWAY)) <= 1 => Verdict::Close,
        Some(exp) if exp >= now.saturating_sub(LEEWAY) => Verdict::Accept,
        _ => Verdict::Reject,
    }
}

/// The mutation of the input's last line applied to `token`.
fn mutate(token: &[u8], kind: u8, mutation: &[u8]) -> Vec<u8> {
    let mut out = token.to_vec();
    let [hi, lo, bytes @ ..] = mutation else {
        return out;
    };
    let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (out.len() + 1);
    match kind {
        1 if at < out.len() => out[at] = bytes.first().copied().unwrap_or(b'A'),
        2 => out.truncate(at),
        3 => drop(out.splice(at..at, bytes.iter().copied())),
        _ => {}
    }
    out
}

/// Polls a future that never waits (the layer's, over a `service_fn` that answers at once).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the layer waited"),
    }
}

/// One call through `AuthLayer` with these `authorization` tokens: whether it reached the
/// service, and the response.
fn call(
    manager: &SessionManager,
    tokens: &[&[u8]],
    grpc: bool,
    len: usize,
) -> Option<(bool, Response<()>)> {
    // An empty body: the check is on the headers alone.
    let mut request = Request::new(Empty::<Bytes>::new());
    for token in tokens {
        let value = HeaderValue::from_bytes(&[b"Bearer ", *token].concat()).ok()?;
        request.headers_mut().append(AUTHORIZATION, value);
    }
    if grpc {
        request
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    let reached = AtomicBool::new(false);
    let mut service =
        AuthLayer::new(manager.clone()).layer(tower::service_fn(|_: Request<Empty<Bytes>>| {
            reached.store(true, Ordering::Relaxed);
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        }));
    // The token read (and its claims decoded) from the request, a refresh minted: a few copies.
    let response = bounded::within("AuthLayer", len, 8, || now(service.call(request)));
    let response = response.unwrap_or_else(|never| match never {});
    Some((reached.load(Ordering::Relaxed), response))
}

/// Checks one call: it reaches the service iff `expected` says so, and is answered as the
/// agent documents. Returns the refresh of a call let through.
fn check(
    manager: &SessionManager,
    tokens: &[&[u8]],
    grpc: bool,
    len: usize,
    now: u64,
) -> Option<Vec<u8>> {
    let values: Vec<Vec<u8>> = tokens.iter().map(|t| [b"Bearer ", *t].concat()).collect();
    let expected = match reference::agreed_bearer(values.iter().map(Vec::as_slice)) {
        Some(token) => reference(token, now),
        None => Verdict::Reject,
    };
    let (reached, response) = call(manager, tokens, grpc, len)?;
    if expected != Verdict::Close {
        assert_eq!(
            reached,
            expected == Verdict::Accept,
            "{expected:?} for {tokens:?}"
        );
    }
    if !reached {
        let challenge = response
            .headers()
            .get("www-authenticate")
            .expect("a challenge");
        assert!(challenge.as_bytes().starts_with(b"Bearer realm="));
        assert!(!response.headers().contains_key(AUTHORIZATION));
        match grpc {
            true => assert_eq!(response.headers()["grpc-status"], "16"),
            false => assert_eq!(response.status(), StatusCode::UNAUTHORIZED),
        }
        return None;
    }
    let refresh = response.headers().get(AUTHORIZATION).expect("a refresh");
    assert!(refresh.is_sensitive());
    let token = reference::bearer(refresh.as_bytes())
        .expect("a bearer token")
        .to_vec();
    assert_eq!(
        reference(&token, now),
        Verdict::Accept,
        "a refresh the agent would not take"
    );
    Some(token)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.splitn(4, |&b| b == b'\n');
    let mut part = |raw: bool| {
        let line = lines.next().unwrap_or_default();
        if raw {
            line.to_vec()
        } else {
            URL_SAFE_NO_PAD.encode(line).into_bytes()
        }
    };
    let (header, claims) = (part(flags & 1 != 0), part(flags & 2 != 0));
    let message = [&header[..], b".", &claims].concat();
    let signed = [&message[..], b".", sign(&message).as_bytes()].concat();
    let signature = part(true);
    let candidate = match flags & 4 != 0 {
        true => [&message[..], b".", &signature].concat(),
        false => signed.clone(),
    };
    let (kind, mutation) = (flags >> 6, lines.next().unwrap_or_default());
    let candidate = mutate(&candidate, kind, mutation);
    let grpc = flags & 16 != 0;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // A manager of its own, so that each input starts with an empty cache.
    let manager = SessionManager::with_key_file(key_file()).expect("the key file is read");
    let parsed = std::str::from_utf8(&candidate)
        .ok()
        .and_then(|t| Token::new(t).ok());
    assert_eq!(parsed.is_some(), reference::is_b64token(&candidate));
    if let Some(token) = &parsed {
        let expected = reference(&candidate, secs);
        let verified = manager.verify(token);
        if expected != Verdict::Close {
            assert_eq!(
                verified.is_ok(),
                expected == Verdict::Accept,
                "verify: {verified:?}"
            );
        }
        if let Err(error) = verified {
            let shown = format!("{error} {error:?}");
            assert!(candidate.len() < 16 || !shown.contains(token.expose()));
        }
    }

    if flags & 8 != 0 {
        check(&manager, &[&signed], grpc, data.len(), secs);
    }
    let tokens: Vec<&[u8]> = match flags & 32 != 0 {
        true => vec![&signed, &candidate],
        false => vec![&candidate],
    };
    // Twice: the second time, what the first let into the cache is there.
    check(&manager, &tokens, grpc, data.len(), secs);
    let refresh = check(&manager, &tokens, grpc, data.len(), secs);
    if let Some(refresh) = refresh.filter(|_| kind != 0) {
        // The refresh is in the cache from the start: a variant of it is still checked in full.
        let forged = mutate(&refresh, kind, mutation);
        check(&manager, &[&forged], grpc, data.len(), secs);
        check(&manager, &[&refresh], grpc, data.len(), secs);
    }
});
