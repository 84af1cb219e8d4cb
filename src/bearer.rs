//! The RFC 6750 wire contract: bearer credentials in `authorization`, challenges in
//! `www-authenticate`.

use http::HeaderValue;

use crate::token::{MalformedToken, Token};

/// Reads `Bearer <token>`: the scheme in any case, then one or more spaces, then the token,
/// surrounding white space ignored. The legacy `Bearer: <token>` form is accepted too.
pub(crate) fn parse_bearer(header: &HeaderValue) -> Result<Token, MalformedToken> {
    let Some((scheme, rest)) = header.as_bytes().trim_ascii().split_first_chunk::<6>() else {
        return Err(MalformedToken::NotBearer);
    };
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    // The scheme in any case: bit 5 set makes a letter lower case, and nothing else a letter.
    if scheme.map(|b| b | 0x20) != *b"bearer"
        || !rest.first().is_some_and(|&b| b == b' ' || b == b'\t')
    {
        return Err(MalformedToken::NotBearer);
    }
    let token = rest.trim_ascii_start();
    // Bytes outside ASCII are refused by the token check; an invalid UTF-8 sequence is reported
    // where it starts, as reading the token as text would.
    Token::from_authorization(header, token).map_err(|why| match std::str::from_utf8(token) {
        Err(e) => MalformedToken::InvalidCharacter {
            position: e.valid_up_to(),
        },
        Ok(_) => why,
    })
}

/// The token an agent sent back in the `authorization` `values` of a response, if a usable
/// one: a malformed one is ignored with a warning (that does not contain it), and the token in
/// use stays.
pub(crate) fn token_from_agent<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Option<Token> {
    // The public reading, so that a re-authenticator reads exactly what a refresh does.
    bearer_from_values(values).unwrap_or_else(|why| {
        tracing::warn!(reason = %why, "ignoring a malformed token from the agent");
        None
    })
}

/// The bearer token in the `authorization` `values` of a map, if there is one.
///
/// Repeated headers must agree; a header that is present but unreadable is an error, so that a
/// caller can tell "no credentials" from "bad credentials".
pub(crate) fn bearer_from_values<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<Option<Token>, MalformedToken> {
    let mut found: Option<Token> = None;
    for value in values {
        let token = parse_bearer(value)?;
        if found.as_ref().is_some_and(|first| *first != token) {
            return Err(MalformedToken::Conflicting);
        }
        found = Some(token);
    }
    Ok(found)
}

/// What the `www-authenticate` challenges of a rejection say about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No challenge at all.
    NoChallenge,
    /// `Bearer` challenge with no error code, or `invalid_request`: no usable token was sent.
    NotProvided,
    /// `error="invalid_token"`: the token was sent and rejected.
    Invalid,
    /// Challenges of other schemes only (`Basic` from a proxy, say), or bearer challenges with
    /// another error (`insufficient_scope`, a permission problem): not about this session.
    NotSession,
}

/// Reads the `www-authenticate` challenges of a rejection. Junk is skipped, never a panic;
/// `invalid_token` anywhere wins over a bare challenge.
pub(crate) fn read_challenges<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Verdict {
    let mut verdict = Verdict::NoChallenge;
    for value in values {
        if verdict == Verdict::NoChallenge {
            verdict = Verdict::NotSession;
        }
        // Read as bytes: a quoted-string may hold obs-text (bytes over 0x7f), which is no
        // `&str` but leaves the challenge's tokens as they are.
        for challenge in Challenges::new(value.as_bytes()) {
            if !challenge.scheme.eq_ignore_ascii_case(b"bearer") {
                continue;
            }
            // The code as it is named, escapes undone; any other (`insufficient_scope`, or one
            // this crate does not know) is no session failure.
            match challenge.error {
                Some(code) if unescaped_is(code, b"invalid_token") => return Verdict::Invalid,
                None => verdict = Verdict::NotProvided,
                Some(code) if unescaped_is(code, b"invalid_request") => {
                    verdict = Verdict::NotProvided;
                }
                Some(_) => {}
            }
        }
    }
    verdict
}

/// Whether `raw`, an auth-param's value as it stands in the header (the inside of a
/// quoted-string, escapes and all, or a token), is `text` once its quoted-pair escapes (`\x` is
/// `x`) are undone: compared as it is read, so that no copy of a value of any length is made.
/// `text` is ASCII, so a byte of a longer character never matches it.
fn unescaped_is(raw: &[u8], text: &[u8]) -> bool {
    // A backslash stands for nothing, and the byte after it for itself; a lone one at the end
    // stands for nothing.
    let mut escaped = false;
    let unescaped = raw.iter().filter(|&&b| {
        let keep = escaped || b != b'\\';
        escaped = !escaped && b == b'\\';
        keep
    });
    unescaped.eq(text)
}

/// One challenge: its scheme, and the value of its first `error` auth-param (see
/// [`unescaped_is`]). Nothing else of it is read, so nothing else is kept: a reader of a
/// challenge list holds no more than one of these at a time, borrowed from the header, whatever
/// the header's size.
struct Challenge<'a> {
    scheme: &'a [u8],
    error: Option<&'a [u8]>,
}

/// A forgiving reader of RFC 9110 `challenge` lists, over a header's bytes: junk is skipped,
/// never a panic, nothing allocated.
struct Challenges<'a> {
    rest: &'a [u8],
}

/// `bytes` without the leading bytes that are one of `set`.
fn trim_start<'a>(bytes: &'a [u8], set: &[u8]) -> &'a [u8] {
    let start = bytes
        .iter()
        .position(|b| !set.contains(b))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

impl<'a> Challenges<'a> {
    fn new(value: &'a [u8]) -> Self {
        Self { rest: value }
    }

    fn take_token(&mut self) -> &'a [u8] {
        let end = self
            .rest
            .iter()
            .position(|b| b",= \t\"".contains(b))
            .unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }

    fn skip_ws(&mut self) {
        self.rest = trim_start(self.rest, b" \t");
    }

    /// The inside of a quoted-string, escapes left in (see [`unescaped_is`]). Called with
    /// `rest` starting at the opening quote; an unterminated string runs to the end.
    fn take_quoted(&mut self) -> &'a [u8] {
        let inside = &self.rest[1..];
        // The byte after a backslash is skipped, whatever it is: the quote or the backslash are
        // the only two that matter here.
        let mut escaped = false;
        let end = inside.iter().position(|&b| {
            let closing = b == b'"' && !escaped;
            escaped = b == b'\\' && !escaped;
            closing
        });
        let (quoted, rest) = inside.split_at(end.unwrap_or(inside.len()));
        self.rest = rest.get(1..).unwrap_or_default();
        quoted
    }
}

impl<'a> Iterator for Challenges<'a> {
    type Item = Challenge<'a>;

    fn next(&mut self) -> Option<Challenge<'a>> {
        let scheme = loop {
            self.rest = trim_start(self.rest, b" \t,");
            if self.rest.is_empty() {
                return None;
            }
            let scheme = self.take_token();
            if !scheme.is_empty() {
                break scheme;
            }
            // A stray `=` or quote where a scheme should be: drop one byte and go on.
            self.rest = &self.rest[1..];
        };
        let mut error = None;
        let mut has_params = false;
        // auth-params: name = value, separated by commas, until the next scheme.
        loop {
            self.skip_ws();
            let checkpoint = self.rest;
            let name = self.take_token();
            self.skip_ws();
            if name.is_empty() || !self.rest.starts_with(b"=") {
                // Not a parameter: either a token68 (`abc`: first after the scheme, alone up to
                // the next comma), which is skipped, or the next challenge's scheme.
                let token68 = !name.is_empty()
                    && !has_params
                    && (self.rest.is_empty() || self.rest.starts_with(b","));
                if !token68 {
                    self.rest = checkpoint;
                }
                break;
            }
            self.rest = &self.rest[1..];
            self.skip_ws();
            let value = if self.rest.starts_with(b"\"") {
                self.take_quoted()
            } else {
                self.take_token()
            };
            has_params = true;
            if error.is_none() && name.eq_ignore_ascii_case(b"error") {
                error = Some(value);
            }
            self.skip_ws();
            match self.rest.strip_prefix(b",") {
                Some(rest) => self.rest = rest,
                None => break,
            }
        }
        Some(Challenge { scheme, error })
    }
}

#[cfg(test)]
mod tests;
