//! Plain reference readers the crate's answers are checked against.

#![allow(dead_code)] // each target uses its own part

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A JSON object's members in order, duplicates kept; anything but an object is an error.
pub struct Members(pub Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only;
        impl<'de> Visitor<'de> for Only {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Only)
    }
}

/// The one member named `name` of `json`, read as a JSON object of valid UTF-8. `Err(())` when
/// `json` is no such object or names it twice (a derived struct refuses a duplicate field).
/// Every other member is read too, as a `Value` (the agent reads a JWT's header so).
pub fn member(json: &[u8], name: &str) -> Result<Option<serde_json::Value>, ()> {
    let text = std::str::from_utf8(json).map_err(|_| ())?;
    let Members(members) = serde_json::from_str(text).map_err(|_| ())?;
    let mut found = members
        .into_iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v);
    let first = found.next();
    if found.next().is_some() {
        return Err(());
    }
    Ok(first)
}

/// Whether `json` is a JSON object of valid UTF-8 whose members all have different names.
pub fn names_each_member_once(json: &[u8]) -> bool {
    let Some(Members(members)) = std::str::from_utf8(json)
        .ok()
        .and_then(|text| serde_json::from_str(text).ok())
    else {
        return false;
    };
    let names: std::collections::HashSet<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    names.len() == members.len()
}

/// [`member`] as a derived struct with the one field `name` reads it (the crate's JWT claims
/// and Polykey's `error`): the other members skipped as serde skips a field it does not know,
/// with `IgnoredAny`, whose reading checks their grammar, escapes and control characters, not
/// their numbers' range, their surrogates' pairing or their depth.
pub fn field(json: &[u8], name: &str) -> Result<Option<serde_json::Value>, ()> {
    struct Field<'a>(&'a str);
    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<serde_json::Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if key != self.0 {
                    map.next_value::<IgnoredAny>()?;
                } else if found.is_some() {
                    return Err(serde::de::Error::custom("a duplicate"));
                } else {
                    found = Some(map.next_value()?);
                }
            }
            Ok(found)
        }
    }
    let text = std::str::from_utf8(json).map_err(|_| ())?;
    let mut reader = serde_json::Deserializer::from_str(text);
    let found = reader.deserialize_map(Field(name)).map_err(|_| ())?;
    reader.end().map_err(|_| ())?;
    Ok(found)
}

/// The longest token the crate takes, in bytes (`Token::MAX_LEN`).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`, and
/// at most [`MAX_TOKEN_LEN`] bytes.
pub fn is_b64token(bytes: &[u8]) -> bool {
    let body = bytes.iter().take_while(|&&b| b != b'=').count();
    body > 0
        && bytes.len() <= MAX_TOKEN_LEN
        && bytes[..body]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
        && bytes[body..].iter().all(|&b| b == b'=')
}

/// The token of one `authorization` value: RFC 6750's `"Bearer" 1*SP b64token`, with what the
/// crate documents beside it: the scheme in any case, the legacy `Bearer:`, tabs as spaces,
/// white space around the value.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ws(b))?;
    let end = value.iter().rposition(|b| !ws(b))? + 1;
    let value = &value[start..end];
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    let token = &rest[rest.iter().position(|b| !ws(b))?..];
    (token.len() < rest.len() && is_b64token(token)).then_some(token)
}

/// The token every `authorization` value of `values` holds, if they all hold the same one;
/// `None` for no value, an unreadable one, or two that differ.
pub fn agreed_bearer<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let mut found = None;
    for value in values {
        let token = bearer(value)?;
        if found.is_some_and(|f| f != token) {
            return None;
        }
        found = Some(token);
    }
    found
}

/// The `exp` a JWT's claims hold, read as [`field`] reads it; `None` for no usable claim.
pub fn jwt_exp(text: &str) -> Option<u64> {
    use base64::Engine as _;
    let parts: Vec<&str> = text.split('.').collect();
    let [_, payload, _] = parts[..] else {
        return None;
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match field(&json, "exp").ok()?? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// What a rejection's `www-authenticate` challenges say of the session, by RFC 6750.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// No `www-authenticate` at all.
    NoChallenge,
    /// A `Bearer` challenge with `error="invalid_token"`.
    Invalid,
    /// A `Bearer` challenge without `error`, or with `invalid_request` (and none invalid).
    NotProvided,
    /// Other schemes, or bearer challenges naming other errors: nothing about the session.
    Nothing,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `name=value`, the value a token or a quoted-string without escapes, all of `piece`.
fn param(piece: &str) -> Option<(&str, &str)> {
    let (name, value) = piece.split_once('=')?;
    let name_ok = !name.is_empty() && name.bytes().all(is_tchar);
    let value_ok = match value.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .is_some_and(|inside| !inside.contains(['"', '\\'])),
        None => !value.is_empty() && value.bytes().all(is_tchar),
    };
    let value = value.trim_matches('"');
    (name_ok && value_ok).then_some((name, value))
}

/// The challenges of `values`, read by RFC 9110's grammar in a strict form: `scheme`, or
/// `scheme 1*SP name=value` followed by `, name=value` pieces. `None` for anything else
/// (token68, escapes, white space around `=`, a parameter after a bare scheme), which this
/// reader leaves to the crate.
pub fn challenges<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Said> {
    let mut any = false;
    let (mut invalid, mut not_provided) = (false, false);
    for value in values {
        any = true;
        let text = std::str::from_utf8(value).ok()?;
        // Split at commas outside quotes.
        let mut pieces = Vec::new();
        let (mut quoted, mut start) = (false, 0);
        for (i, b) in text.bytes().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    pieces.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        pieces.push(&text[start..]);
        // The current challenge: is it Bearer, its first `error`, does it take parameters.
        let mut current: Option<(bool, Option<&str>, bool)> = None;
        let mut close = |c: Option<(bool, Option<&str>, bool)>| {
            if let Some((true, error, _)) = c {
                match error {
                    Some("invalid_token") => invalid = true,
                    None | Some("invalid_request") => not_provided = true,
                    Some(_) => {}
                }
            }
        };
        for piece in pieces {
            let piece = piece.trim_matches([' ', '\t']);
            if piece.is_empty() {
                continue;
            }
            let end = piece
                .bytes()
                .position(|b| !is_tchar(b))
                .unwrap_or(piece.len());
            let (first, rest) = piece.split_at(end);
            let (scheme, param_text) = match rest.bytes().next() {
                None => (Some(first), None),
                Some(b' ' | b'\t') => (Some(first), Some(rest.trim_start_matches([' ', '\t']))),
                Some(b'=') => (None, Some(piece)),
                Some(_) => return None,
            };
            if let Some(scheme) = scheme {
                if scheme.is_empty() {
                    return None;
                }
                close(current.take());
                current = Some((scheme.eq_ignore_ascii_case("bearer"), None, false));
            }
            if let Some(param_text) = param_text {
                let (name, value) = param(param_text)?;
                let challenge = current.as_mut()?;
                // A parameter after a bare scheme is ambiguous between lists: not strict.
                if scheme.is_none() && !challenge.2 {
                    return None;
                }
                challenge.2 = true;
                if challenge.1.is_none() && name.eq_ignore_ascii_case("error") {
                    challenge.1 = Some(value);
                }
            }
        }
        close(current);
    }
    Some(if !any {
        Said::NoChallenge
    } else if invalid {
        Said::Invalid
    } else if not_provided {
        Said::NotProvided
    } else {
        Said::Nothing
    })
}

/// A `grpc-message` as text: visible ASCII (and tabs), `%XX` decoded; `None` for other bytes.
pub fn grpc_message(value: &[u8]) -> Option<Vec<u8>> {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if let [b'%', hi, lo, ..] = value[i..]
            && let (Some(hi), Some(lo)) = (hex(hi), hex(lo))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A session failure, as the crate's `Error` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotProvided,
    Invalid,
}

/// What Polykey's `error` JSON names, when `grpc-status` says the call failed.
pub fn polykey_failure(headers: &http::HeaderMap) -> Option<Failure> {
    let failed = headers.get("grpc-status").is_some_and(|s| s != "0");
    if !failed {
        return None;
    }
    match field(headers.get("error")?.as_bytes(), "type").ok()?? {
        serde_json::Value::String(kind) => match kind.as_str() {
            "ErrorClientAuthMissing" | "ErrorClientJWTTokenNotProvided" => {
                Some(Failure::NotProvided)
            }
            "ErrorClientAuthDenied" | "ErrorSessionTokenInvalid" => Some(Failure::Invalid),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a response refuses the call's credentials by RFC 6750: HTTP 401, or `grpc-status:
/// 16` in the headers.
pub fn is_rejection(status: http::StatusCode, headers: &http::HeaderMap) -> bool {
    status == 401 || headers.get("grpc-status").is_some_and(|s| s == "16")
}

/// The session failure an RFC 6750 agent's response is, as the crate's docs say it
/// (`Error::from_parts`); the outer `None` when the challenges are outside [`challenges`]'
/// strict grammar.
pub fn rfc6750_failure(
    status: http::StatusCode,
    headers: &http::HeaderMap,
) -> Option<Option<Failure>> {
    if !is_rejection(status, headers) {
        return Some(None);
    }
    let values = headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.as_bytes());
    Some(match challenges(values)? {
        Said::Invalid => Some(Failure::Invalid),
        Said::NotProvided => Some(Failure::NotProvided),
        Said::Nothing => None,
        Said::NoChallenge => {
            let message = headers
                .get("grpc-message")
                .and_then(|m| grpc_message(m.as_bytes()));
            let needle = b"JWT Token not provided in metadata";
            match message {
                Some(m) if m.windows(needle.len()).any(|w| w == needle) => {
                    Some(Failure::NotProvided)
                }
                _ => Some(Failure::Invalid),
            }
        }
    })
}
