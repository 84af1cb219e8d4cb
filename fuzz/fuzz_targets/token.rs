//! `Token::new` and what it reads of the token: any text is either refused or kept exactly,
//! never shown by `Debug` or `Display`, and its `exp` is what serde_json finds in a claims
//! object read for that one field, the other members skipped as serde skips a field it does not
//! know (`reference::field`), or nothing.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tower_agent_session::Token;

mod bounded;
mod reference;

#[global_allocator]
static GLOBAL: bounded::Counting = bounded::Counting;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The value, its header and the decoded claims: a few copies of the input.
    let Ok(token) = bounded::within("Token::new", data.len(), 6, || Token::new(text)) else {
        return;
    };
    assert_eq!(token.expose(), text);
    let header = token.header_value();
    assert!(header.is_sensitive());
    assert_eq!(header.as_bytes(), [b"Bearer ", data].concat());

    for shown in [
        format!("{token:?}"),
        format!("{token}"),
        format!("{header:?}"),
    ] {
        assert!(
            !shown.contains(text) || "Token(<redacted>) Sensitive".contains(text),
            "the token shows in {shown:?}"
        );
    }

    let expected =
        reference::jwt_exp(text).map(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    assert_eq!(token.expires_at(), expected.flatten(), "exp of {text:?}");

    // A response that brings it back is read as the same token.
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, header);
    assert_eq!(Token::from_headers(&headers), Ok(Some(token)));
});
