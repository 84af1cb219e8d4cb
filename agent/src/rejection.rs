//! How [`AuthLayer`](super::AuthLayer) turns a call away: RFC 6750 challenges, over HTTP or as
//! a trailers-only gRPC answer.

use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::error::VerifyError;

/// Why a call is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    NotProvided,
    Conflicting,
    Invalid(VerifyError),
}

impl Rejection {
    const ALL: [Self; 5] = [
        Self::NotProvided,
        Self::Conflicting,
        Self::Invalid(VerifyError::Expired),
        Self::Invalid(VerifyError::InvalidSignature),
        Self::Invalid(VerifyError::Malformed),
    ];
    const COUNT: usize = Self::ALL.len();

    fn index(self) -> usize {
        match self {
            Self::NotProvided => 0,
            Self::Conflicting => 1,
            Self::Invalid(VerifyError::Expired) => 2,
            Self::Invalid(VerifyError::InvalidSignature) => 3,
            Self::Invalid(VerifyError::Malformed) => 4,
        }
    }

    /// The `error_description` of an `invalid_token` challenge, if this is one.
    fn description(self) -> Option<&'static str> {
        match self {
            Self::NotProvided => None,
            Self::Conflicting => Some("conflicting tokens"),
            Self::Invalid(error) => Some(error.description()),
        }
    }
}

/// The headers of every rejection for one realm, over HTTP and over gRPC, built when the realm
/// is set: a rejection clones them instead of formatting and encoding them again.
#[derive(Debug, Clone)]
pub(super) struct Rejections {
    /// Indexed by [`Rejection::index`], then HTTP (0) or gRPC (1).
    headers: [[HeaderMap; 2]; Rejection::COUNT],
}

impl Rejections {
    pub(super) fn new(realm: &str) -> Self {
        let challenge = challenge(realm);
        Self {
            headers: Rejection::ALL
                .map(|rejection| [false, true].map(|grpc| headers(&challenge, rejection, grpc))),
        }
    }

    /// The status and headers that turn a call away; `grpc` for a trailers-only gRPC answer.
    pub(super) fn get(&self, rejection: Rejection, grpc: bool) -> (StatusCode, HeaderMap) {
        let status = if grpc {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        (
            status,
            self.headers[rejection.index()][usize::from(grpc)].clone(),
        )
    }
}

fn headers(challenge: &str, rejection: Rejection, grpc: bool) -> HeaderMap {
    let (challenge, message) = match rejection.description() {
        None => (
            challenge.to_owned(),
            tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE,
        ),
        Some(description) => (
            format!(r#"{challenge}, error="invalid_token", error_description="{description}""#),
            tower_agent_session::Error::TOKEN_INVALID_MESSAGE,
        ),
    };
    let mut headers = HeaderMap::new();
    // The realm is sanitised and the rest is ours, so this always parses.
    let challenge =
        HeaderValue::try_from(challenge).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    headers.insert(WWW_AUTHENTICATE, challenge);
    if !grpc {
        return headers;
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    // `add_header` writes `grpc-status` and the percent-encoded `grpc-message`; it can only
    // fail on a message that cannot be encoded, which ours are not.
    let status = tonic::Status::unauthenticated(message);
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", HeaderValue::from_static("16"));
    }
    headers
}

pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `Bearer realm="<realm>"`, the realm reduced to visible ASCII and quoted.
fn challenge(realm: &str) -> String {
    let mut out = String::from(r#"Bearer realm=""#);
    for c in realm.chars().filter(|c| matches!(c, ' '..='~')) {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realm_is_quoted_and_sanitised() {
        assert_eq!(challenge("agent"), r#"Bearer realm="agent""#);
        assert_eq!(challenge("a\"b\\c\r\né"), r#"Bearer realm="a\"b\\c""#);
        assert!(HeaderValue::try_from(challenge("x\0\u{7f}y")).is_ok());
    }

    #[test]
    fn grpc_rejection_is_trailers_only() {
        let rejections = Rejections::new(super::super::DEFAULT_REALM);
        let (status, headers) = rejections.get(Rejection::Invalid(VerifyError::Expired), true);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], "16");
        assert_eq!(
            headers["grpc-message"],
            "Invalid%20JWT%20Token,%20please%20reauthenticate."
        );
        assert_eq!(
            headers["www-authenticate"],
            r#"Bearer realm="agent", error="invalid_token", error_description="token expired""#
        );
    }

    #[test]
    fn every_rejection_has_its_challenge() {
        let rejections = Rejections::new("r");
        for rejection in Rejection::ALL {
            let (status, headers) = rejections.get(rejection, false);
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            let challenge = headers["www-authenticate"].to_str().unwrap();
            match rejection.description() {
                None => assert_eq!(challenge, r#"Bearer realm="r""#),
                Some(description) => assert_eq!(
                    challenge,
                    format!(
                        r#"Bearer realm="r", error="invalid_token", error_description="{description}""#
                    )
                ),
            }
            let (_, grpc) = rejections.get(rejection, true);
            assert_eq!(grpc["www-authenticate"], headers["www-authenticate"]);
            assert_eq!(grpc["grpc-status"], "16");
        }
    }
}
