//! [`Token`]: a validated session token that never shows itself.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// A session token, checked against the RFC 6750 `b64token` grammar.
///
/// The value is a secret: `Debug` and `Display` print `Token(<redacted>)`, and the only way to
/// read it is [`Token::expose`]. Cloning is cheap (a reference count: the token is its
/// `authorization: Bearer <token>` header value, built once, marked sensitive, when the token
/// is made, or the response's own value when an agent sent it).
///
/// ```
/// use tower_agent_session::Token;
///
/// let token = Token::new("eyJhbGciOiJIUzI1NiJ9.e30.c2ln").unwrap();
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// assert_eq!(token.expose(), "eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
/// assert!(Token::new("has space").is_err());
/// ```
// Equal when their bytes are: `expires_at` is read from them, so it is equal too.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// `Bearer <token>`, sensitive: the token itself is its tail, after [`BEARER`].
    header: HeaderValue,
    /// The `exp` claim, read from the token: equal tokens have the same.
    expires_at: Option<u64>,
}

/// What an `authorization` value holds before the token, as this crate writes it.
const BEARER: &[u8] = b"Bearer ";

impl Token {
    /// The longest token accepted, in bytes: 16 KiB. A JWT with a handful of claims is a few
    /// hundred bytes; this leaves room for large claim sets while keeping a hostile agent or
    /// session file from making a client hold megabytes per call.
    pub const MAX_LEN: usize = 16 * 1024;

    /// Checks `value` and makes a token of it.
    ///
    /// The accepted form is RFC 6750's `b64token`: one or more of `A-Z a-z 0-9 - . _ ~ + /`,
    /// then any number of `=`, at most [`Token::MAX_LEN`](crate::Token::MAX_LEN) bytes. Nothing is trimmed.
    ///
    /// # Errors
    ///
    /// [`MalformedToken`] saying what is wrong (never showing the value).
    pub fn new(value: impl Into<String>) -> Result<Self, MalformedToken> {
        let value: String = value.into();
        let expires_at = read_token(value.as_bytes())?;
        let header = bearer_header(value.as_bytes());
        Ok(Self { header, expires_at })
    }

    /// The token `token`, found in the `authorization` value `value` (a refresh, say). When the
    /// value is `Bearer <token>` exactly, as agents send it, it becomes the token's header as
    /// it is: a clone of a `HeaderValue` shares its bytes (a reference count, for a value read
    /// off the wire), so taking a refresh copies nothing. The clone keeps the buffer the value
    /// was read into alive as long as the token lives: over HTTP/2 the header block's, over
    /// HTTP/1 the connection's read buffer, which the client bounds (hyper: 400 KiB by
    /// default). One such buffer for each token alive: the session's, and one on its way to
    /// the file.
    pub(crate) fn from_authorization(
        value: &HeaderValue,
        token: &[u8],
    ) -> Result<Self, MalformedToken> {
        let expires_at = read_token(token)?;
        // `token` is the value's own tail (the bytes themselves, not a copy), as a refresh
        // reads it: the same bytes, without comparing them.
        let own = value
            .as_bytes()
            .strip_prefix(BEARER)
            .is_some_and(|tail| std::ptr::eq(tail, token));
        let mut header = if own {
            value.clone()
        } else {
            bearer_header(token)
        };
        header.set_sensitive(true);
        Ok(Self { header, expires_at })
    }

    /// The session token an agent sent in `headers`, read by the rules the layer applies to a
    /// refresh: `authorization: Bearer <token>` (the scheme in any case, the legacy
    /// `Bearer: <token>` too, white space around ignored), every repeat of the header carrying
    /// the same token. For a re-authenticator whose agent answers an unlock with the token in
    /// its response headers, as Polykey's does.
    ///
    /// # Errors
    ///
    /// [`MalformedToken`] when an `authorization` header is there but holds no usable bearer
    /// token ([`MalformedToken::NotBearer`], [`MalformedToken::Conflicting`], or what is wrong
    /// with the token). `Ok(None)` when there is no `authorization` header.
    ///
    /// ```
    /// use tower_agent_session::{MalformedToken, Token};
    /// use http::{HeaderMap, HeaderValue};
    ///
    /// let mut headers = HeaderMap::new();
    /// assert_eq!(Token::from_headers(&headers), Ok(None));
    /// headers.insert("authorization", HeaderValue::from_static("Bearer eyJhbGciOi.e30.c2ln"));
    /// let token = Token::from_headers(&headers)?.expect("a token");
    /// assert_eq!(token.expose(), "eyJhbGciOi.e30.c2ln");
    /// headers.insert("authorization", HeaderValue::from_static("Basic dXNlcjpwdw=="));
    /// assert_eq!(Token::from_headers(&headers), Err(MalformedToken::NotBearer));
    /// # Ok::<(), MalformedToken>(())
    /// ```
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<Self>, MalformedToken> {
        crate::bearer::bearer_from_values(headers.get_all(http::header::AUTHORIZATION))
    }

    /// [`Token::from_headers`] for a tonic response's or status's metadata: the token of an
    /// unlock's answer, say.
    ///
    /// # Errors
    ///
    /// As [`Token::from_headers`].
    ///
    /// ```
    /// use tower_agent_session::{MalformedToken, Token};
    ///
    /// // What a Polykey agent answers an unlock with: the token in the response's headers.
    /// let mut reply = tonic::Response::new(());
    /// reply
    ///     .metadata_mut()
    ///     .insert("authorization", "Bearer eyJhbGciOi.e30.c2ln".parse().unwrap());
    /// let token = Token::from_metadata(reply.metadata())?.expect("an unlock answers with a token");
    /// assert_eq!(token.expose(), "eyJhbGciOi.e30.c2ln");
    /// # Ok::<(), MalformedToken>(())
    /// ```
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn from_metadata(
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<Self>, MalformedToken> {
        Self::from_headers(metadata.as_ref())
    }

    /// The token itself. Named so that every place that reads the secret says so.
    pub fn expose(&self) -> &str {
        // The token was checked to be ASCII when it was made: this cannot fall back.
        let token = self.header.as_bytes().strip_prefix(BEARER);
        std::str::from_utf8(token.unwrap_or_default()).unwrap_or_default()
    }

    /// `Bearer <token>`, ready for an `authorization` header, marked sensitive.
    #[inline]
    pub fn header_value(&self) -> HeaderValue {
        self.header.clone()
    }

    /// Whether `value` is exactly this token's `authorization` value: a refresh that brings
    /// the token in use back costs a comparison, not a parse.
    pub(crate) fn is_header(&self, value: &HeaderValue) -> bool {
        self.header.as_bytes() == value.as_bytes()
    }

    /// When the token expires, if it is a JWT with an `exp` claim that is a time: `None` also
    /// for an `exp` past what a `SystemTime` holds (on Unix, `i64::MAX` seconds after the
    /// epoch, as `{"exp":1e300}` is), which no clock reaches and `tower-agent-session-agent` never
    /// mints.
    ///
    /// The claim is read without checking the signature: the agent is the judge of the token,
    /// this is only a hint (for instance to skip writing a refresh that buys no time).
    pub fn expires_at(&self) -> Option<SystemTime> {
        // A claim too far out to be a time is no usable claim (and must not overflow).
        UNIX_EPOCH.checked_add(Duration::from_secs(self.expires_at?))
    }

    /// The `exp` claim in seconds since the Unix epoch, if the token is a JWT that has one.
    pub(crate) fn exp_secs(&self) -> Option<u64> {
        self.expires_at
    }
}

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
    /// The token is longer than [`Token::MAX_LEN`](crate::Token::MAX_LEN).
    #[error("the token is {len} bytes long, over the limit of {}", Token::MAX_LEN)]
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
    /// An `authorization` value is not of the `Bearer` scheme ([`Token::from_headers`]).
    #[error("the authorization header is not a bearer credential")]
    NotBearer,
    /// The `authorization` header is repeated with different tokens ([`Token::from_headers`]).
    #[error("the authorization header is repeated with different tokens")]
    Conflicting,
}

/// Checks `bytes` against the `b64token` grammar and reads its `exp`, if it is a JWT that has
/// one.
fn read_token(bytes: &[u8]) -> Result<Option<u64>, MalformedToken> {
    if bytes.is_empty() {
        return Err(MalformedToken::Empty);
    }
    if bytes.len() > Token::MAX_LEN {
        return Err(MalformedToken::TooLong { len: bytes.len() });
    }
    let jwt = jwt::read(bytes);
    // Claims that decode are base64url, in the alphabet: of such a JWT, only the other parts
    // are left to check (an agent's have no `=`, which the full check takes).
    if !jwt.is_some_and(|(outer, _)| outer.iter().all(|part| in_alphabet(part))) {
        check_b64token(bytes)?;
    }
    Ok(jwt.and_then(|(_, exp)| exp))
}

/// Checks `bytes`, neither empty nor too long, against the `b64token` grammar.
fn check_b64token(bytes: &[u8]) -> Result<(), MalformedToken> {
    if in_alphabet(bytes) {
        return Ok(());
    }
    // The first byte out of the alphabet, then the `=` that may follow it to the end.
    let body = bytes
        .iter()
        .position(|&b| !is_b64token_char(b))
        .unwrap_or(0);
    let end = body + bytes[body..].iter().take_while(|&&b| b == b'=').count();
    match end {
        _ if body == 0 => Err(MalformedToken::InvalidCharacter { position: 0 }),
        end if end == bytes.len() => Ok(()),
        position => Err(MalformedToken::InvalidCharacter { position }),
    }
}

/// Whether every byte of `bytes` is one of `A-Z a-z 0-9 - . _ ~ + /` (the `b64token` alphabet,
/// without `=`): the common case.
fn in_alphabet(bytes: &[u8]) -> bool {
    every_byte(bytes, is_b64token_char)
}

/// Whether `test` holds for every byte of `bytes`: 16 at a time, without a branch a byte (in
/// vectors), and no loop for the bytes left over past the last 16, which are tested again.
#[inline(always)]
fn every_byte(bytes: &[u8], test: impl Fn(u8) -> bool + Copy) -> bool {
    let all = |all, &b| all & test(b);
    match bytes.last_chunk::<16>() {
        Some(last) => {
            bytes
                .as_chunks::<16>()
                .0
                .iter()
                .all(|chunk| chunk.iter().fold(true, all))
                && last.iter().fold(true, all)
        }
        None => bytes.iter().fold(true, all),
    }
}

/// One of `A-Z a-z 0-9 - . _ ~ + /`; written without branches (see [`in_alphabet`]).
fn is_b64token_char(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    // `-`, `.`, `/` and the digits are one run of ASCII.
    let dash_to_nine = b.wrapping_sub(b'-') < 13;
    letter | dash_to_nine | (b == b'+') | (b == b'_') | (b == b'~')
}

fn bearer_header(token: &[u8]) -> HeaderValue {
    let bytes = [BEARER, token].concat();
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

mod jwt;

#[cfg(test)]
mod tests;
