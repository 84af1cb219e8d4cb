//! A rejection's `www-authenticate` challenges, read by `Error::from_parts` and the two
//! `SessionFailures`, in memory that does not grow with the header; and
//! `Token::from_headers` over the same values as `authorization`.
//!
//! Input: a first byte of flags (bit 0: HTTP 401, bit 1: `grpc-status: 16`, bit 2: the second
//! line is a `grpc-message`), then lines, each a header value.

#![no_main]

use http::{HeaderMap, HeaderValue, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tower_agent_session::{Error, Polykey, Rfc6750, SessionFailures, Token};

mod bounded;

#[global_allocator]
static GLOBAL: bounded::Counting = bounded::Counting;

fn same(a: &Option<Error>, b: &Option<Error>) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
        && match (a, b) {
            (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
            _ => true,
        }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.split(|&b| b == b'\n');
    let status = if flags & 1 != 0 {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut headers = HeaderMap::new();
    if flags & 2 != 0 {
        headers.insert("grpc-status", HeaderValue::from_static("16"));
    }
    if flags & 4 != 0
        && let Some(Ok(message)) = lines.next().map(HeaderValue::from_bytes)
    {
        headers.insert("grpc-message", message);
    }
    let mut credentials = HeaderMap::new();
    let mut challenges = Vec::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            challenges.push(line);
            headers.append(header::WWW_AUTHENTICATE, value.clone());
            credentials.append(header::AUTHORIZATION, value);
        }
    }

    // The message is decoded into a copy; the challenges are read where they are.
    let failure = bounded::within("Error::from_parts", data.len(), 2, || {
        Error::from_parts(status, &headers)
    });
    let rfc = bounded::within("Rfc6750", data.len(), 2, || {
        Rfc6750.session_failure(status, &headers)
    });
    let polykey = bounded::within("Polykey", data.len(), 2, || {
        Polykey.session_failure(status, &headers)
    });

    let rejection = flags & 3 != 0;
    if !rejection {
        assert!(failure.is_none() && rfc.is_none() && polykey.is_none());
    }
    for found in [&failure, &rfc, &polykey].into_iter().flatten() {
        assert!(found.is_session_failure(), "{found:?}");
    }
    // No `error` header here, so Polykey reads as RFC 6750 does, and both as from_parts.
    assert!(same(&rfc, &polykey), "{rfc:?} {polykey:?}");
    assert!(same(&rfc, &failure), "{rfc:?} {failure:?}");
    if rejection && !challenges.is_empty() {
        let bearer = challenges
            .iter()
            .any(|c| c.windows(6).any(|w| w.eq_ignore_ascii_case(b"bearer")));
        if !bearer {
            assert!(rfc.is_none(), "no bearer challenge, yet {rfc:?}");
        }
    }

    if let Ok(Some(token)) = Token::from_headers(&credentials) {
        let exposed = token.expose().as_bytes();
        assert!(
            challenges
                .iter()
                .any(|c| c.windows(exposed.len()).any(|w| w == exposed)),
            "a token that no value holds"
        );
    }
});
