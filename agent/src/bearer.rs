//! A call's bearer credentials, read by the client crate's rules
//! ([`Token::from_headers`](tower_agent_session::Token::from_headers)), with a shortcut for the
//! verified-token cache: the token's bytes of a lone `authorization` value, before any check.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use tower_agent_session::{MalformedToken, Token};

/// What a request's `authorization` header(s) hold.
#[derive(Debug)]
pub(crate) enum Credentials {
    /// No header, or not the `Bearer` scheme.
    None,
    /// The header is repeated with different tokens.
    Conflicting,
    /// The scheme is right, the token is not.
    Malformed,
    /// A well-formed bearer token.
    Token(Token),
}

/// The credentials of `headers`, read in full (a [`Token`] made: alphabet, length, `exp`).
pub(crate) fn credentials(headers: &HeaderMap) -> Credentials {
    match Token::from_headers(headers) {
        Ok(None) | Err(MalformedToken::NotBearer) => Credentials::None,
        Ok(Some(token)) => Credentials::Token(token),
        Err(MalformedToken::Conflicting) => Credentials::Conflicting,
        Err(_) => Credentials::Malformed,
    }
}

/// The token's bytes of the one `authorization` header of `headers`, cut where
/// [`credentials`] cuts it (the scheme in any case, the legacy `Bearer:`, white space around),
/// but not checked: bytes to look up among tokens already verified, which are well-formed, so
/// that a token found there is the token [`credentials`] would read. `None` for anything else
/// (no header, several, another scheme), which is then read in full.
pub(crate) fn lone_bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    bearer_bytes(value.as_bytes())
}

/// `Bearer <token>` cut as the client crate cuts it: the scheme in any case, an optional colon,
/// then at least one space or tab; surrounding white space ignored.
fn bearer_bytes(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    if !rest.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return None;
    }
    Some(rest.trim_ascii_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    /// Wherever the shortcut finds bytes, the full reading finds the same token, or none that is
    /// well-formed (which the cache never holds).
    #[test]
    fn the_shortcut_cuts_where_the_full_reading_does() {
        let forms = [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER \t abc.def.ghi  ",
            "  Bearer abc",
            "Bearer: abc",
            "Bearer:abc",
            "Bearerabc",
            "Bearer",
            "Bearer ",
            "Basic abc",
            "Bearer a b",
            "Bearer a~b+/c=",
        ];
        for form in forms {
            let headers = headers(&[form]);
            let full = credentials(&headers);
            match (lone_bearer(&headers), &full) {
                (Some(bytes), Credentials::Token(token)) => {
                    assert_eq!(bytes, token.expose().as_bytes(), "{form:?}")
                }
                (Some(_), Credentials::Malformed) => {}
                (None, Credentials::None) => {}
                (cut, full) => panic!("{form:?}: shortcut {cut:?}, full reading {full:?}"),
            }
        }
    }

    #[test]
    fn repeats_are_read_in_full() {
        let same = headers(&["Bearer abc", "Bearer abc"]);
        assert!(lone_bearer(&same).is_none());
        assert!(matches!(credentials(&same), Credentials::Token(_)));
        let different = headers(&["Bearer abc", "Bearer abd"]);
        assert!(matches!(credentials(&different), Credentials::Conflicting));
        assert!(lone_bearer(&HeaderMap::new()).is_none());
        assert!(matches!(credentials(&HeaderMap::new()), Credentials::None));
    }
}
