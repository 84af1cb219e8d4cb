//! Properties of [`read`] over generated responses, against the rules of the module's
//! documentation written out again from scratch ([`Case::expected`]).

use super::tests::{SESSION, Said, XSession, headers, said};
use super::*;
use crate::failures::Rfc6750;
use proptest::prelude::*;

/// `www-authenticate` values drawn from, and what RFC 6750 makes of each on a rejection: the
/// failure, or none (other schemes, other errors).
const CHALLENGES: [(&str, Option<&str>); 4] = [
    (r#"Bearer error="invalid_token""#, Some("invalid")),
    (r#"Bearer realm="agent""#, Some("not provided")),
    (r#"Basic realm="proxy""#, None),
    (r#"Bearer error="insufficient_scope""#, None),
];

/// `authorization` values of every kind: well-formed in several spellings, two tokens, not
/// bearer, malformed tokens, bytes outside ASCII.
const VALUES: [&[u8]; 14] = [
    b"Bearer a",
    b"bearer a",
    b" BEARER:\ta ",
    b"Bearer b",
    b"Bearer a.b.c",
    b"Bearer a==",
    b"Bearer",
    b"Bearer ",
    b"Basic a",
    b"Bearer a b",
    b"Bearer =a",
    b"Bearer a,b",
    b"Bearer:a",
    b"Bearer \xc3\xa9",
];

/// What a response's part (its headers, or its trailers) holds of what is read.
#[derive(Debug, Clone)]
struct Part {
    grpc_status: Option<&'static str>,
    challenge: Option<usize>,
    x_session: Option<&'static str>,
}

fn part() -> impl Strategy<Value = Part> {
    (
        prop::option::of(prop::sample::select(vec!["0", "2", "16"])),
        prop::option::of(0..CHALLENGES.len()),
        prop::option::of(prop::sample::select(vec!["expired", "missing", "fine"])),
    )
        .prop_map(|(grpc_status, challenge, x_session)| Part {
            grpc_status,
            challenge,
            x_session,
        })
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(VALUES.to_vec()).prop_map(<[u8]>::to_vec),
        "[a-z0-9._~+/=-]{0,4}".prop_map(|t| format!("Bearer {t}").into_bytes()),
        "[ -~\t]{0,10}".prop_map(String::into_bytes),
    ]
}

fn carried() -> impl Strategy<Value = Carried> {
    prop_oneof![
        (0..3u64).prop_map(Carried::Session),
        (0..3u64).prop_map(Carried::Password),
        Just(Carried::Nothing),
        Just(Carried::Own),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    carried: Carried,
    status: u16,
    headers: Part,
    authorization: Vec<Vec<u8>>,
    trailers: Option<Part>,
    /// `XSession` rather than `Rfc6750`.
    x_session: bool,
    in_use: Option<&'static str>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        carried(),
        prop::sample::select(vec![200u16, 401, 403]),
        part(),
        prop::collection::vec(value(), 0..4),
        prop::option::of(part()),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
    )
        .prop_map(
            |(carried, status, headers, authorization, trailers, x_session, in_use)| Case {
                carried,
                status,
                headers,
                authorization,
                trailers,
                x_session,
                in_use,
            },
        )
}

fn map_of(part: &Part, authorization: &[Vec<u8>]) -> HeaderMap {
    let mut pairs: Vec<(&str, &[u8])> = Vec::new();
    if let Some(code) = part.grpc_status {
        pairs.push(("grpc-status", code.as_bytes()));
    }
    if let Some(i) = part.challenge {
        pairs.push(("www-authenticate", CHALLENGES[i].0.as_bytes()));
    }
    if let Some(said) = part.x_session {
        pairs.push(("x-session", said.as_bytes()));
    }
    for value in authorization {
        pairs.push(("authorization", value));
    }
    headers(&pairs)
}

impl Case {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap()
    }

    fn failures(&self) -> Failures {
        if self.x_session {
            Failures::new(XSession)
        } else {
            Failures::new(Rfc6750)
        }
    }

    /// [`read`], with the token in use looked up as the session does, or not at all.
    fn read(&self, look_up: bool, trailers: bool) -> Said {
        let headers = map_of(&self.headers, &self.authorization);
        let trailers = self
            .trailers
            .as_ref()
            .filter(|_| trailers)
            .map(|t| map_of(t, &[]));
        let in_use = self.in_use.map(|t| Token::new(t).unwrap());
        let lookup = |value: &HeaderValue| {
            in_use
                .as_ref()
                .filter(|token| look_up && token.is_header(value))
                .cloned()
        };
        let failures = self.failures();
        said(&read(
            self.carried,
            self.status(),
            &headers,
            headers.get(http::header::AUTHORIZATION),
            trailers.as_ref(),
            &failures,
            lookup,
        ))
    }

    /// The rules of the module's documentation, applied from scratch.
    fn expected(&self) -> Said {
        if self.carried == Carried::Own {
            return Said::Nothing;
        }
        let in_headers = self.judged(self.status, &self.headers);
        let in_trailers = self.trailers.as_ref().map(|t| self.judged(200, t));
        let failure = in_headers.1.or(in_trailers.and_then(|t| t.1));
        match (failure, self.carried) {
            (Some(_), Carried::Password(_)) => return Said::Nothing,
            (Some(failure), _) => return Said::Failure(failure),
            (None, _) => {}
        }
        if in_headers.0 || in_trailers.is_some_and(|t| t.0) {
            return Said::Nothing;
        }
        let tokens: Option<Vec<&[u8]>> = self.authorization.iter().map(|v| bearer(v)).collect();
        let token = match tokens.as_deref() {
            Some([first, rest @ ..]) if rest.iter().all(|t| t == first) => {
                String::from_utf8(first.to_vec()).unwrap()
            }
            _ => return Said::Nothing,
        };
        match self.carried {
            Carried::Session(epoch) => Said::Refresh(token, epoch),
            Carried::Password(epoch) => Said::Started(token, epoch),
            _ => Said::Nothing,
        }
    }

    /// Whether `part` with `status` is a rejection (HTTP 401, gRPC `UNAUTHENTICATED`), and the
    /// session failure it is, as the case's agent says them.
    fn judged(&self, status: u16, part: &Part) -> (bool, Option<&'static str>) {
        let rejected = status == 401 || part.grpc_status == Some("16");
        let failure = if self.x_session {
            match part.x_session {
                Some("expired") => Some("invalid"),
                Some("missing") => Some("not provided"),
                _ => None,
            }
        } else if rejected {
            // No challenge: the message decides, and there is none here.
            part.challenge.map_or(Some("invalid"), |i| CHALLENGES[i].1)
        } else {
            None
        };
        (rejected, failure)
    }
}

/// RFC 6750 §2.1 read from scratch: `Bearer` in any case (the legacy `Bearer:` too), one or
/// more spaces, then a `b64token` (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
/// *"="`); white space around the value ignored.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = &value[6..];
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    if !rest.starts_with(b" ") && !rest.starts_with(b"\t") {
        return None;
    }
    let token = rest.trim_ascii_start();
    let body = token.iter().position(|&b| b == b'=').unwrap_or(token.len());
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(b);
    let well_formed =
        body > 0 && token[..body].iter().all(b64) && token[body..].iter().all(|&b| b == b'=');
    well_formed.then_some(token)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Every response reads as the rules say: a failure over a token, a rejection refreshing
    /// nothing, repeated values agreeing or no token, a malformed value never a token.
    #[test]
    fn reads_by_the_rules(case in case()) {
        prop_assert_eq!(case.read(true, true), case.expected());
    }

    /// The token in use, compared instead of parsed, changes only the cost.
    #[test]
    fn the_token_in_use_changes_nothing(case in case()) {
        prop_assert_eq!(case.read(true, true), case.read(false, true));
    }

    /// A response without `authorization` is at most a failure: the layer, which recovers from
    /// none, need not read it.
    #[test]
    fn without_authorization_at_most_a_failure(mut case in case()) {
        case.authorization.clear();
        let said = case.read(true, true);
        prop_assert!(matches!(said, Said::Nothing | Said::Failure(_)), "{:?}", said);
    }

    /// Headers that are a session failure are read alike whatever the trailers say: there is
    /// no need to wait for them.
    #[test]
    fn a_failure_in_the_headers_needs_no_trailers(case in case()) {
        let without = case.read(true, false);
        if let Said::Failure(_) = without {
            prop_assert_eq!(case.read(true, true), without);
        }
    }

    /// The test that spares most responses a judgement agrees with the judgement: a
    /// rejection, or a failure as the session's reading finds it.
    #[test]
    fn refuse_is_judge_without_its_failure(case in case()) {
        let headers = map_of(&case.headers, &case.authorization);
        let failures = case.failures();
        let judged = crate::error::is_rejection(case.status(), &headers)
            || failures.read().session_failure(case.status(), &headers).is_some();
        prop_assert_eq!(failures.refuse(case.status(), &headers), judged);
    }

    /// A refresh is what `Token::from_headers`, the public reading, finds, whenever the
    /// response refuses nothing.
    #[test]
    fn a_refresh_is_the_public_reading(mut case in case()) {
        case.carried = SESSION;
        case.trailers = None;
        let headers = map_of(&case.headers, &case.authorization);
        if !case.failures().refuse(case.status(), &headers) {
            let public = Token::from_headers(&headers).ok().flatten();
            let expected = public.map_or(Said::Nothing, |t| Said::Refresh(t.expose().to_owned(), 7));
            prop_assert_eq!(case.read(true, false), expected);
        }
    }
}
