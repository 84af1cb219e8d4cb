//! `SessionLayer` over a fake agent: a `service_fn` that answers each call as the input says.
//! Every request goes with `authorization: Bearer <the session's token>`, sensitive; after a
//! call the session holds the refresh the reference reads off a response that does not refuse
//! the call, or its token as before; the store holds what `AgentTokens` says is written; the
//! failure a response is (headers or trailers) is what the documented rules make of it; no
//! token shows in `Debug` or `Display`.
//!
//! Input: a flags byte (bit 0: `Polykey`'s failures, else `Rfc6750`; bit 1:
//! `AgentTokens::RevokedOnRefresh`), then lines: the session's first token, then a block per
//! call (at most 8), blocks apart by an empty line. A block's first line is the HTTP status
//! (200 if it is none); then `name:value` response headers, `~name:value` trailers and
//! `>name:value` request headers. A value (or first token) `J<digits>` stands for a JWT whose
//! `exp` is that number, as `Bearer <jwt>` in a header.

#![no_main]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use reference::Failure;
use tower::{Layer as _, Service as _, ServiceExt as _};
use tower_agent_session::store::MemoryStore;
use tower_agent_session::{
    AgentTokens, Error, Polykey, Rfc6750, Session, SessionFailures, SessionLayer, Token, Watch,
};

mod bounded;
mod reference;

#[global_allocator]
static GLOBAL: bounded::Counting = bounded::Counting;

const MAX_CALLS: usize = 8;

/// A response body that is only trailers, as a gRPC failure sent after the headers.
struct Trailers(Option<HeaderMap>);

impl http_body::Body for Trailers {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|t| Ok(http_body::Frame::trailers(t))))
    }
}

/// One call: what goes with the request, and the agent's answer.
struct Call {
    request: HeaderMap,
    status: StatusCode,
    headers: HeaderMap,
    trailers: HeaderMap,
}

/// `J<digits>`: a JWT (HS256 header, junk signature) whose claims are `{"exp":<digits>}`.
fn jwt(raw: &[u8]) -> Option<String> {
    let digits = raw.strip_prefix(b"J")?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let claims = [&br#"{"exp":"#[..], digits, b"}"].concat();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
    Some(format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2lnbmF0dXJl"))
}

fn value(raw: &[u8]) -> Option<HeaderValue> {
    match jwt(raw) {
        Some(jwt) => HeaderValue::try_from(format!("Bearer {jwt}")).ok(),
        None => HeaderValue::from_bytes(raw).ok(),
    }
}

fn parse(rest: &[u8]) -> Option<(Token, Vec<Call>)> {
    let mut lines = rest.split(|&b| b == b'\n');
    let first = lines.next()?;
    let first = match jwt(first) {
        Some(jwt) => Token::new(jwt).ok()?,
        None => Token::new(std::str::from_utf8(first).ok()?).ok()?,
    };
    let mut calls = Vec::new();
    let mut block = Vec::new();
    for line in lines.chain([&b""[..]]) {
        if !line.is_empty() {
            block.push(line);
            continue;
        }
        let Some((status, headers)) = block.split_first() else {
            continue;
        };
        let status = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let mut call = Call {
            request: HeaderMap::new(),
            status,
            headers: HeaderMap::new(),
            trailers: HeaderMap::new(),
        };
        for line in headers {
            let (map, line) = match line.split_first() {
                Some((b'~', line)) => (&mut call.trailers, line),
                Some((b'>', line)) => (&mut call.request, line),
                _ => (&mut call.headers, *line),
            };
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if let (Ok(name), Some(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                value(&line[colon + 1..]),
            ) {
                map.append(name, value);
            }
        }
        calls.push(call);
        block.clear();
        if calls.len() == MAX_CALLS {
            break;
        }
    }
    Some((first, calls))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fn kind(error: Option<Error>) -> Option<Failure> {
    match error? {
        Error::TokenNotProvided => Some(Failure::NotProvided),
        Error::TokenInvalid => Some(Failure::Invalid),
        other => panic!("a response read as {other:?}"),
    }
}

/// The failure the documented rules make of `headers`; the outer `None` when the challenges
/// are outside the reference's strict grammar.
fn reference_failure(
    polykey: bool,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<Option<Failure>> {
    if let Some(named) = polykey
        .then(|| reference::polykey_failure(headers))
        .flatten()
    {
        return Some(Some(named));
    }
    reference::rfc6750_failure(status, headers)
}

/// Panics if `token` shows in `shown`. A token shorter than 16 bytes may be one of the words
/// around it (`epoch: 1`, `Sensitive`): no run of b64token characters in these is as long.
fn hidden(token: &Token, shown: &str) {
    let text = token.expose();
    assert!(
        text.len() < 16 || !shown.contains(text),
        "the token shows in {shown:?}"
    );
}

fn exp(token: &Token) -> Option<u64> {
    reference::jwt_exp(token.expose())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((first, calls)) = parse(rest) else {
        return;
    };
    let polykey = flags & 1 != 0;
    let agent_tokens = if flags & 2 != 0 {
        AgentTokens::RevokedOnRefresh
    } else {
        AgentTokens::LiveUntilExpiry
    };
    let failures: &dyn SessionFailures = if polykey { &Polykey } else { &Rfc6750 };

    let store = MemoryStore::new();
    let mut builder = Session::builder(store.clone())
        .watch(Watch::Off)
        .agent_tokens(agent_tokens);
    if polykey {
        builder = builder.failures(Polykey);
    }
    let session = builder.build();
    runtime()
        .block_on(session.start_with_token(first.clone()))
        .expect("a memory store takes the token");

    let answers: Arc<Mutex<VecDeque<Response<Trailers>>>> = Arc::default();
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let agent = tower::service_fn({
        let (answers, seen) = (answers.clone(), seen.clone());
        move |request: Request<()>| {
            seen.lock().unwrap().push(request.headers().clone());
            let answer = answers
                .lock()
                .unwrap()
                .pop_front()
                .expect("an answer per call");
            std::future::ready(Ok::<_, Infallible>(answer))
        }
    });
    let mut service = SessionLayer::new(session.clone()).layer(agent);

    let (mut current, mut stored) = (first, store.token());
    for call in calls {
        let mut response = Response::new(Trailers(Some(call.trailers.clone())));
        *response.status_mut() = call.status;
        *response.headers_mut() = call.headers.clone();
        answers.lock().unwrap().push_back(response);
        let mut request = Request::new(());
        *request.headers_mut() = call.request.clone();
        let own = call.request.contains_key(AUTHORIZATION);

        // The request's headers and the token read are the crate's copies of the input.
        let response = bounded::within("a call", data.len(), 8, || {
            runtime().block_on(async {
                let response = service.ready().await.unwrap().call(request).await.unwrap();
                session
                    .flush()
                    .await
                    .expect("a memory store takes every write");
                response
            })
        });

        // The request went with the session's token, or with its own credentials, hidden.
        let sent = seen.lock().unwrap().pop().expect("the agent was called");
        let values: Vec<&HeaderValue> = sent.get_all(AUTHORIZATION).iter().collect();
        assert!(
            values.iter().all(|v| v.is_sensitive()),
            "credentials not hidden"
        );
        if own {
            assert!(
                values
                    .iter()
                    .copied()
                    .eq(call.request.get_all(AUTHORIZATION))
            );
        } else {
            assert_eq!(values, [&current.header_value()], "not the session's token");
        }

        // What the reference reads: a refresh, on a response that does not refuse the call.
        let refused = reference::is_rejection(call.status, &call.headers)
            || (polykey && reference::polykey_failure(&call.headers).is_some());
        let values = call
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes());
        let refresh = reference::agreed_bearer(values)
            .filter(|_| !own && !refused)
            .map(|t| Token::new(std::str::from_utf8(t).unwrap()).expect("a b64token is a token"));
        if let Some(new) = refresh.clone() {
            let outlived = matches!((exp(&current), exp(&new)), (Some(c), Some(n)) if c > n);
            if stored.as_ref() == Some(&new) && current != new {
                // The store's token again, while another is in use: kept as it is. After a
                // flush they differ only when the store's lives as long (not worth a write).
                assert_eq!(exp(&current), exp(&new), "the stored token comes back");
            } else if !outlived {
                current = new.clone();
            }
            // Written when it outlives what the store holds, as `AgentTokens` says.
            let covered = match (stored.as_ref().and_then(exp), exp(&new)) {
                (Some(s), Some(n)) => match agent_tokens {
                    AgentTokens::RevokedOnRefresh => s > n,
                    _ => s >= n,
                },
                _ => false,
            };
            if !covered {
                stored = Some(new);
            }
        }
        assert_eq!(
            session.token().as_ref(),
            Some(&current),
            "{:?}",
            call.headers
        );
        assert_eq!(store.token(), stored, "what the store holds");

        // Its failure, in the headers and in the trailers, as the documented rules say.
        let failure = session.failure_of(&response);
        if let Some(error) = &failure {
            hidden(&current, &format!("{error} {error:?}"));
        }
        if let Some(expected) = reference_failure(polykey, call.status, &call.headers) {
            assert_eq!(
                kind(failure),
                expected,
                "{:?} {:?}",
                call.status,
                call.headers
            );
        }
        if let Some(expected) = reference_failure(polykey, StatusCode::OK, &call.trailers) {
            let found = failures.session_failure(StatusCode::OK, &call.trailers);
            assert_eq!(kind(found), expected, "trailers {:?}", call.trailers);
        }

        // The response's credentials are hidden; its trailers pass untouched.
        let mut credentials = HeaderMap::new();
        for value in response.headers().get_all(AUTHORIZATION) {
            credentials.append(AUTHORIZATION, value.clone());
        }
        assert!(credentials.values().all(HeaderValue::is_sensitive));
        let (_, mut body) = response.into_parts();
        assert_eq!(body.0.take().as_ref(), Some(&call.trailers));
        for token in [&current].into_iter().chain(refresh.as_ref()) {
            hidden(token, &format!("{credentials:?}"));
        }
        hidden(&current, &format!("{session:?}"));
    }
});
