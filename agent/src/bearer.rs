//! A call's bearer credentials, read by the client crate's rules
//! ([`Token::from_headers`](agent_session::Token::from_headers)).

use agent_session::{MalformedToken, Token};
use http::HeaderMap;

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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::AUTHORIZATION;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn repeats_are_read_in_full() {
        let same = headers(&["Bearer abc", "Bearer abc"]);
        assert!(matches!(credentials(&same), Credentials::Token(_)));
        let different = headers(&["Bearer abc", "Bearer abd"]);
        assert!(matches!(credentials(&different), Credentials::Conflicting));
        assert!(matches!(credentials(&HeaderMap::new()), Credentials::None));
    }
}
