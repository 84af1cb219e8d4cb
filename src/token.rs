//! [`Token`]: a validated session token that never shows itself.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::HeaderValue;

/// The longest token accepted, in bytes.
///
/// A JWT with a handful of claims is a few hundred bytes; 16 KiB leaves room for large claim sets
/// while keeping a hostile agent or session file from making us hold megabytes per call.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A session token, checked against the RFC 6750 `b64token` grammar.
///
/// The value is a secret: `Debug` and `Display` print `Token(<redacted>)`, and the only way to
/// read it is [`Token::expose`]. Cloning is cheap (an `Arc` inside), and the
/// `authorization: Bearer <token>` header value is built once, marked sensitive, when the token
/// is made.
///
/// ```
/// use agent_session::Token;
///
/// let token = Token::new("eyJhbGciOiJIUzI1NiJ9.e30.c2ln").unwrap();
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// assert_eq!(token.expose(), "eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
/// assert!(Token::new("has space").is_err());
/// ```
#[derive(Clone)]
pub struct Token {
    inner: Arc<Inner>,
}

struct Inner {
    value: Box<str>,
    header: HeaderValue,
    expires_at: Option<u64>,
}

impl Token {
    /// Checks `value` and makes a token of it.
    ///
    /// The accepted form is RFC 6750's `b64token`: one or more of `A-Z a-z 0-9 - . _ ~ + /`,
    /// then any number of `=`, at most [`MAX_TOKEN_LEN`] bytes. Nothing is trimmed.
    ///
    /// # Errors
    ///
    /// [`MalformedToken`] saying what is wrong (never showing the value).
    pub fn new(value: impl Into<String>) -> Result<Self, MalformedToken> {
        let value: String = value.into();
        check_b64token(value.as_bytes())?;
        let header = bearer_header(&value);
        let expires_at = jwt_expiry(&value);
        Ok(Self {
            inner: Arc::new(Inner {
                value: value.into_boxed_str(),
                header,
                expires_at,
            }),
        })
    }

    /// The token itself. Named so that every place that reads the secret says so.
    pub fn expose(&self) -> &str {
        &self.inner.value
    }

    /// `Bearer <token>`, ready for an `authorization` header, marked sensitive.
    #[inline]
    pub fn header_value(&self) -> HeaderValue {
        self.inner.header.clone()
    }

    /// Whether `value` is exactly this token's `authorization` value: a refresh that brings
    /// the token in use back costs a comparison, not a parse.
    pub(crate) fn is_header(&self, value: &HeaderValue) -> bool {
        self.inner.header.as_bytes() == value.as_bytes()
    }

    /// When the token expires, if it is a JWT with an `exp` claim.
    ///
    /// The claim is read without checking the signature: the agent is the judge of the token,
    /// this is only a hint (for instance to skip writing a refresh that buys no time).
    pub fn expires_at(&self) -> Option<SystemTime> {
        // A claim too far out to be a time is no usable claim (and must not overflow).
        UNIX_EPOCH.checked_add(Duration::from_secs(self.inner.expires_at?))
    }

    /// The `exp` claim in seconds since the Unix epoch, if the token is a JWT that has one.
    pub(crate) fn exp_secs(&self) -> Option<u64> {
        self.inner.expires_at
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.value == other.inner.value
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Token {
    type Err = MalformedToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why a string is not a [`Token`]. Never carries the rejected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedToken {
    /// The token is empty.
    #[error("the token is empty")]
    Empty,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {len} bytes long, over the limit of {MAX_TOKEN_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A byte outside RFC 6750's `b64token` alphabet, or a `=` before the end.
    #[error("the token has a character not allowed in a bearer token at byte {position}")]
    InvalidCharacter {
        /// The offset of the first offending byte.
        position: usize,
    },
}

fn check_b64token(bytes: &[u8]) -> Result<(), MalformedToken> {
    if bytes.is_empty() {
        return Err(MalformedToken::Empty);
    }
    if bytes.len() > MAX_TOKEN_LEN {
        return Err(MalformedToken::TooLong { len: bytes.len() });
    }
    let body_len = bytes.iter().position(|&b| b == b'=').unwrap_or(bytes.len());
    if body_len == 0 {
        return Err(MalformedToken::InvalidCharacter { position: 0 });
    }
    if let Some(position) = bytes[..body_len].iter().position(|&b| !is_b64token_char(b)) {
        return Err(MalformedToken::InvalidCharacter { position });
    }
    if let Some(offset) = bytes[body_len..].iter().position(|&b| b != b'=') {
        return Err(MalformedToken::InvalidCharacter {
            position: body_len + offset,
        });
    }
    Ok(())
}

fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

fn bearer_header(value: &str) -> HeaderValue {
    let mut bytes = Vec::with_capacity("Bearer ".len() + value.len());
    bytes.extend_from_slice(b"Bearer ");
    bytes.extend_from_slice(value.as_bytes());
    // The b64token alphabet is visible ASCII, so this cannot fail; keep a safe fallback anyway.
    let mut header = HeaderValue::from_maybe_shared(bytes::Bytes::from(bytes))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// `bytes` as text, if they are valid UTF-8 and open a JSON object.
///
/// Serde's derived structs also take an array for a struct, and skip the fields they do not
/// know without checking their strings: read through this, a struct is only ever an object, and
/// all of its text is UTF-8. One pass over the bytes, no allocation.
pub(crate) fn json_object(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
        .then_some(text)
}

/// Reads the `exp` claim of a JWT without verifying it. The claims must be a JSON object of
/// valid UTF-8 ([`json_object`]).
fn jwt_expiry(value: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Number>,
    }
    let mut parts = value.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_str(json_object(&json)?).ok()?;
    let exp = claims.exp?;
    // NumericDate may carry a fraction; a negative or absurd value means "no usable claim".
    exp.as_u64().or_else(|| {
        exp.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64.encode(payload)
        )
    }

    #[test]
    fn accepts_the_b64token_alphabet() {
        for ok in ["a", "AZaz09-._~+/", "abc=", "abc==", "x.y.z"] {
            assert!(Token::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(Token::new(""), Err(MalformedToken::Empty));
        assert_eq!(
            Token::new("="),
            Err(MalformedToken::InvalidCharacter { position: 0 })
        );
        assert_eq!(
            Token::new("ab=c"),
            Err(MalformedToken::InvalidCharacter { position: 3 })
        );
        for (bad, at) in [
            ("a b", 1),
            ("ab\r\n", 2),
            ("a\0", 1),
            ("é", 0),
            ("a\t", 1),
            ("a,b", 1),
            ("a\"", 1),
        ] {
            assert_eq!(
                Token::new(bad),
                Err(MalformedToken::InvalidCharacter { position: at }),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            Token::new(long),
            Err(MalformedToken::TooLong {
                len: MAX_TOKEN_LEN + 1
            })
        );
        assert!(Token::new("a".repeat(MAX_TOKEN_LEN)).is_ok());
    }

    #[test]
    fn never_prints_the_value() {
        let token = Token::new("s3cr3t").unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
        assert!(!format!("{token}").contains("s3cr3t"));
        assert!(!format!("{:?}", token.header_value()).contains("s3cr3t"));
    }

    #[test]
    fn header_is_bearer_and_sensitive() {
        let token = Token::new("abc").unwrap();
        let header = token.header_value();
        assert_eq!(header.as_bytes(), b"Bearer abc");
        assert!(header.is_sensitive());
    }

    /// Claims are a JSON object of valid UTF-8: serde's derive would take an array for the
    /// struct, and does not check the strings of the fields it skips.
    #[test]
    fn claims_must_be_an_object_of_valid_utf8() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let raw = |claims: &[u8]| format!("e30.{}.c2ln", b64.encode(claims));
        for claims in [
            &b"[1700000000]"[..],
            b"{\"exp\":1,\"x\":\"\xf8\"}",
            b"{\"x\":\"\xf8\",\"exp\":1}",
            b"{\"exp\":1}\xf8",
            b"\xef\xbb\xbf{\"exp\":1}",
        ] {
            let token = Token::new(raw(claims)).unwrap();
            assert_eq!(
                token.exp_secs(),
                None,
                "{:?}",
                String::from_utf8_lossy(claims)
            );
        }
        assert_eq!(Token::new(raw(b"{\"exp\":1}")).unwrap().exp_secs(), Some(1));
    }

    #[test]
    fn reads_jwt_expiry() {
        assert_eq!(
            Token::new(jwt(r#"{"exp":1700000000}"#)).unwrap().exp_secs(),
            Some(1_700_000_000)
        );
        assert_eq!(
            Token::new(jwt(r#"{"exp":1700000000.7}"#))
                .unwrap()
                .exp_secs(),
            Some(1_700_000_000)
        );
        assert_eq!(Token::new(jwt(r#"{"iat":1}"#)).unwrap().exp_secs(), None);
        assert_eq!(Token::new(jwt(r#"{"exp":-5}"#)).unwrap().exp_secs(), None);
        for huge in [
            r#"{"exp":1e19}"#,
            r#"{"exp":1e300}"#,
            r#"{"exp":18446744073709551615}"#,
        ] {
            let token = Token::new(jwt(huge)).unwrap();
            assert!(token.exp_secs().is_some());
            assert_eq!(token.expires_at(), None, "{huge}");
        }
        assert_eq!(Token::new(jwt("not json")).unwrap().exp_secs(), None);
        assert_eq!(
            Token::new(jwt(" \n{\"exp\":7}")).unwrap().exp_secs(),
            Some(7)
        );
        assert_eq!(Token::new("opaque").unwrap().exp_secs(), None);
        assert_eq!(Token::new("a.b.c.d").unwrap().exp_secs(), None);
    }
}
