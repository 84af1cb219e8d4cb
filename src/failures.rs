//! [`SessionFailures`]: how an agent says that a call failed for its session. Agents differ:
//! an RFC 6750 agent answers HTTP `401` or gRPC `UNAUTHENTICATED` with a `www-authenticate`
//! challenge ([`Rfc6750`], the default); a Polykey agent answers gRPC `UNKNOWN` with the error's
//! type in an `error` trailer ([`Polykey`]). Another agent is one small `impl` away.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::error::Error;
use crate::token::json_object;

/// Reads a session failure ([`Error::TokenNotProvided`] or [`Error::TokenInvalid`]) off what an
/// agent answered: a response's status and headers, or a gRPC response's trailers.
///
/// The layer asks it about every response's headers, and about the trailers of a gRPC response
/// whose headers said nothing (as grpc-js agents send every error), to decide whether to
/// re-authenticate; `Error::from_status_with` asks it about a tonic `Status`. Return `None` for
/// anything that is not a session failure: a rejection of something else must not make a user
/// type a password.
///
/// ```
/// use tower_agent_session::{Error, SessionFailures};
/// use http::{HeaderMap, StatusCode};
///
/// /// An agent that says `x-session: expired` or `x-session: missing`.
/// #[derive(Debug)]
/// struct MyAgent;
///
/// impl SessionFailures for MyAgent {
///     fn session_failure(&self, _status: StatusCode, headers: &HeaderMap) -> Option<Error> {
///         match headers.get("x-session")?.as_bytes() {
///             b"expired" => Some(Error::TokenInvalid),
///             b"missing" => Some(Error::TokenNotProvided),
///             _ => None,
///         }
///     }
/// }
/// ```
pub trait SessionFailures: fmt::Debug + Send + Sync + 'static {
    /// The session failure that `headers` carry, if any. `status` is the response's HTTP
    /// status; for gRPC trailers it is the response's too (`200`).
    fn session_failure(&self, status: StatusCode, headers: &HeaderMap) -> Option<Error>;

    /// How long re-authentication waits for the first frame of a gRPC response whose headers
    /// said nothing, to see whether it is a failure sent in the trailers (default
    /// 250 ms); `Duration::ZERO` never looks.
    ///
    /// A failure comes with the headers, so a short wait sees it. A response whose first
    /// message is not there by then (a stream waiting for an event) is handed over without
    /// it: a working stream is held up at most this long, once, when it starts.
    fn trailers_wait(&self) -> Duration {
        DEFAULT_TRAILERS_WAIT
    }
}

/// How long re-authentication looks for a session failure in the trailers of a gRPC response
/// whose headers said nothing, by default: far longer than the agent takes between the headers
/// and the trailers of a failure (one write), short enough not to be noticed at the start of a
/// stream.
pub(crate) const DEFAULT_TRAILERS_WAIT: Duration = Duration::from_millis(250);

/// RFC 6750 bearer-token rejections, the default: HTTP `401`, or gRPC `UNAUTHENTICATED`, with a
/// `www-authenticate: Bearer …` challenge saying which failure (see
/// [`Error::from_parts`]). The crate's own agent speaks it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc6750;

impl SessionFailures for Rfc6750 {
    fn session_failure(&self, status: StatusCode, headers: &HeaderMap) -> Option<Error> {
        Error::from_parts(status, headers).filter(Error::is_session_failure)
    }
}

/// A Polykey agent's rejections: a gRPC error (grpc-js sends `UNKNOWN`) whose `error` metadata
/// holds JSON naming the error's type.
///
/// | `type` | failure |
/// |---|---|
/// | `ErrorClientAuthMissing`, `ErrorClientJWTTokenNotProvided` (2021 releases) | [`Error::TokenNotProvided`] |
/// | `ErrorClientAuthDenied`, `ErrorSessionTokenInvalid` (2021 releases) | [`Error::TokenInvalid`] |
///
/// RFC 6750 rejections are recognised too, as [`Rfc6750`] reads them, also beside an `error`
/// that names no session failure.
///
/// ```
/// use tower_agent_session::{Error, Polykey, SessionFailures};
///
/// let mut trailers = http::HeaderMap::new();
/// trailers.insert("grpc-status", "2".parse().unwrap());
/// trailers.insert("error", r#"{"type":"ErrorClientAuthDenied","data":{"exitCode":77}}"#.parse().unwrap());
/// let failure = Polykey.session_failure(http::StatusCode::OK, &trailers);
/// assert!(matches!(failure, Some(Error::TokenInvalid)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Polykey;

impl SessionFailures for Polykey {
    fn session_failure(&self, status: StatusCode, headers: &HeaderMap) -> Option<Error> {
        let failed = headers
            .get(crate::error::GRPC_STATUS)
            .is_some_and(|code| code.as_bytes() != b"0");
        if failed && let Some(named) = headers.get("error").and_then(polykey_failure) {
            return Some(named);
        }
        // An `error` that names no session failure (another Polykey error, or not Polykey's at
        // all) says nothing against an RFC 6750 rejection beside it: a proxy or a newer agent
        // may send both.
        Rfc6750.session_failure(status, headers)
    }
}

/// A session's [`SessionFailures`], and what the session may skip asking them: whether they are
/// [`Rfc6750`], whose every failure is a rejection. Made together, so the two cannot disagree.
#[derive(Clone)]
pub(crate) struct Failures {
    read: Arc<dyn SessionFailures>,
    rejections_only: bool,
}

impl Failures {
    pub(crate) fn new(failures: impl SessionFailures) -> Self {
        Self {
            rejections_only: (&failures as &dyn std::any::Any).is::<Rfc6750>(),
            read: Arc::new(failures),
        }
    }

    /// The agent's own reading.
    pub(crate) fn read(&self) -> &dyn SessionFailures {
        &*self.read
    }

    /// Whether `status` and `headers` are a rejection or a session failure, answered without
    /// making the failure: the test every response with a token passes.
    #[inline]
    pub(crate) fn refuse(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        // `Rfc6750` reads a failure only out of a rejection: asking it too would look again.
        crate::error::is_rejection(status, headers)
            || (!self.rejections_only && self.read.session_failure(status, headers).is_some())
    }
}

/// The session failure a Polykey `error` value names by its `type`; `None` for another type,
/// and for anything that is not such JSON: a JSON object of valid UTF-8 ([`json_object`]).
fn polykey_failure(value: &HeaderValue) -> Option<Error> {
    #[derive(serde::Deserialize)]
    struct Described {
        #[serde(rename = "type")]
        kind: String,
    }
    let described: Described = serde_json::from_str(json_object(value.as_bytes())?).ok()?;
    match described.kind.as_str() {
        "ErrorClientAuthMissing" | "ErrorClientJWTTokenNotProvided" => {
            Some(Error::TokenNotProvided)
        }
        "ErrorClientAuthDenied" | "ErrorSessionTokenInvalid" => Some(Error::TokenInvalid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Polykey failure (not a rejection as RFC 6750 says them) still refuses; the default
    /// reading is only asked about rejections.
    #[test]
    fn failures_are_asked_unless_they_are_rfc6750() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "2".parse().unwrap());
        trailers.insert(
            "error",
            r#"{"type":"ErrorClientAuthDenied"}"#.parse().unwrap(),
        );
        assert!(matches!(
            Failures::new(Polykey)
                .read()
                .session_failure(StatusCode::OK, &trailers),
            Some(Error::TokenInvalid)
        ));
        assert!(Failures::new(Polykey).refuse(StatusCode::OK, &trailers));
        assert!(!Failures::new(Rfc6750).refuse(StatusCode::OK, &trailers));
        assert!(
            (Failures::new(Rfc6750).read())
                .session_failure(StatusCode::OK, &trailers)
                .is_none()
        );
        assert!(Failures::new(Rfc6750).rejections_only);
        assert!(!Failures::new(Polykey).rejections_only);
    }

    /// What `Failures::refuse` counts on when it asks `Rfc6750` nothing beyond
    /// `is_rejection`: its every failure is a rejection.
    #[test]
    fn rfc6750_finds_failures_in_rejections_only() {
        let challenge = r#"Bearer error="invalid_token""#;
        for (status, grpc_status) in [
            (StatusCode::OK, None),
            (StatusCode::OK, Some("0")),
            (StatusCode::OK, Some("7")),
            (StatusCode::FORBIDDEN, None),
            (StatusCode::BAD_REQUEST, Some("2")),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("www-authenticate", challenge.parse().unwrap());
            headers.insert(
                "grpc-message",
                "Invalid JWT Token, please reauthenticate.".parse().unwrap(),
            );
            if let Some(code) = grpc_status {
                headers.insert("grpc-status", code.parse().unwrap());
            }
            assert!(!crate::error::is_rejection(status, &headers));
            assert!(
                Rfc6750.session_failure(status, &headers).is_none(),
                "{status} {grpc_status:?}"
            );
        }
    }

    fn trailers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    fn polykey(pairs: &[(&'static str, &'static str)]) -> Option<Error> {
        Polykey.session_failure(StatusCode::OK, &trailers(pairs))
    }

    #[test]
    fn polykey_names_both_failures_in_both_generations() {
        for (kind, not_provided) in [
            ("ErrorClientAuthMissing", true),
            ("ErrorClientJWTTokenNotProvided", true),
            ("ErrorClientAuthDenied", false),
            ("ErrorSessionTokenInvalid", false),
        ] {
            let json: &'static str =
                Box::leak(format!(r#"{{"type":"{kind}","data":{{"exitCode":77}}}}"#).into());
            let got = polykey(&[("grpc-status", "2"), ("error", json)]);
            match (got, not_provided) {
                (Some(Error::TokenNotProvided), true) | (Some(Error::TokenInvalid), false) => {}
                (other, _) => panic!("{kind}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_polykey_errors_and_junk_are_no_session_failure() {
        let format = r#"{"type":"ErrorClientAuthFormat","data":{"exitCode":64}}"#;
        assert!(polykey(&[("grpc-status", "2"), ("error", format)]).is_none());
        assert!(polykey(&[("grpc-status", "2"), ("error", "not json")]).is_none());
        assert!(polykey(&[("grpc-status", "2"), ("error", r#"{"type":7}"#)]).is_none());
        assert!(polykey(&[("grpc-status", "2")]).is_none());
        // Polykey's `error` is an object: an array naming a failure is no failure.
        for not_an_object in [
            r#"["ErrorClientAuthMissing"]"#,
            r#""ErrorClientAuthMissing""#,
        ] {
            assert!(
                polykey(&[("grpc-status", "2"), ("error", not_an_object)]).is_none(),
                "{not_an_object}"
            );
        }

        let mut invalid_utf8 = trailers(&[("grpc-status", "2")]);
        invalid_utf8.insert(
            "error",
            http::HeaderValue::from_bytes(b"{\"type\":\"ErrorClientAuthDenied\",\"x\":\"\xf8\"}")
                .unwrap(),
        );
        assert!(
            Polykey
                .session_failure(StatusCode::OK, &invalid_utf8)
                .is_none()
        );
        // An `error` on a success is not a failure.
        let denied = r#"{"type":"ErrorClientAuthDenied"}"#;
        assert!(polykey(&[("grpc-status", "0"), ("error", denied)]).is_none());
        assert!(polykey(&[("error", denied)]).is_none());
    }

    #[test]
    fn polykey_reads_rfc6750_rejections_too() {
        assert!(matches!(
            polykey(&[("grpc-status", "16")]),
            Some(Error::TokenInvalid)
        ));
        let challenge = trailers(&[("www-authenticate", r#"Bearer realm="x""#)]);
        assert!(matches!(
            Polykey.session_failure(StatusCode::UNAUTHORIZED, &challenge),
            Some(Error::TokenNotProvided)
        ));
    }

    #[test]
    fn an_unknown_polykey_error_leaves_an_rfc6750_rejection_standing() {
        for error in ["junk", r#"{"type":"ErrorOther"}"#] {
            let got = polykey(&[
                ("grpc-status", "16"),
                ("www-authenticate", r#"Bearer error="invalid_token""#),
                ("error", error),
            ]);
            assert!(matches!(got, Some(Error::TokenInvalid)), "{error}: {got:?}");
        }
    }

    #[test]
    fn rfc6750_ignores_other_rejections() {
        let basic = trailers(&[("www-authenticate", r#"Basic realm="proxy""#)]);
        assert!(
            Rfc6750
                .session_failure(StatusCode::UNAUTHORIZED, &basic)
                .is_none()
        );
        assert!(
            Rfc6750
                .session_failure(StatusCode::OK, &HeaderMap::new())
                .is_none()
        );
    }
}
