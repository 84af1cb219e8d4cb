//! [`read`] against the rules of RFC 6750 and of this crate: cases by hand (the properties
//! over generated responses are in `props.rs`).

use super::*;
use crate::failures::{Rfc6750, SessionFailures};

/// A reading, comparable: the token's text, the failure's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Said {
    Nothing,
    Refresh(String, u64),
    Started(String, u64),
    Failure(&'static str),
}

pub(super) fn said(reading: &Reading) -> Said {
    match reading {
        Reading::Nothing => Said::Nothing,
        Reading::Refresh { token, epoch } => Said::Refresh(token.expose().to_owned(), *epoch),
        Reading::Started { token, epoch } => Said::Started(token.expose().to_owned(), *epoch),
        Reading::Failure(Error::TokenInvalid) => Said::Failure("invalid"),
        Reading::Failure(Error::TokenNotProvided) => Said::Failure("not provided"),
        Reading::Failure(other) => panic!("not a session failure: {other:?}"),
    }
}

/// An agent that says its failures in an `x-session` header, on any status (the
/// `SessionFailures` example): failures that are not all rejections.
#[derive(Debug)]
pub(super) struct XSession;

impl SessionFailures for XSession {
    fn session_failure(&self, _status: StatusCode, headers: &HeaderMap) -> Option<Error> {
        match headers.get("x-session")?.as_bytes() {
            b"expired" => Some(Error::TokenInvalid),
            b"missing" => Some(Error::TokenNotProvided),
            _ => None,
        }
    }
}

pub(super) fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    map
}

/// [`read`] with the default failures and no token in use.
fn read_plain(carried: Carried, status: u16, pairs: &[(&str, &[u8])]) -> Said {
    let status = StatusCode::from_u16(status).unwrap();
    let failures = Failures::new(Rfc6750);
    let headers = headers(pairs);
    said(&read(
        carried,
        status,
        &headers,
        headers.get(http::header::AUTHORIZATION),
        None,
        &failures,
        |_| None,
    ))
}

pub(super) const SESSION: Carried = Carried::Session(7);

#[test]
fn a_refresh_and_a_session_started() {
    let refresh = [("authorization", &b"Bearer t1"[..])];
    assert_eq!(
        read_plain(SESSION, 200, &refresh),
        Said::Refresh("t1".into(), 7)
    );
    assert_eq!(
        read_plain(Carried::Password(3), 200, &refresh),
        Said::Started("t1".into(), 3)
    );
    assert_eq!(read_plain(Carried::Nothing, 200, &refresh), Said::Nothing);
    assert_eq!(read_plain(Carried::Own, 200, &refresh), Said::Nothing);
    assert_eq!(read_plain(SESSION, 200, &[]), Said::Nothing);
}

#[test]
fn a_failure_wins_over_a_token_and_a_rejection_refreshes_nothing() {
    let failed: [(&str, &[u8]); 2] = [
        ("www-authenticate", br#"Bearer error="invalid_token""#),
        ("authorization", b"Bearer planted"),
    ];
    assert_eq!(read_plain(SESSION, 401, &failed), Said::Failure("invalid"));
    assert_eq!(
        read_plain(Carried::Nothing, 401, &failed[..1]),
        Said::Failure("invalid")
    );
    // A password refused is the password's failure, and a call's own credentials are theirs.
    assert_eq!(
        read_plain(Carried::Password(0), 401, &failed),
        Said::Nothing
    );
    assert_eq!(read_plain(Carried::Own, 401, &failed), Said::Nothing);
    // A proxy's rejection is no session failure, and its token no refresh.
    let proxy: [(&str, &[u8]); 2] = [
        ("www-authenticate", br#"Basic realm="proxy""#),
        ("authorization", b"Bearer planted"),
    ];
    assert_eq!(read_plain(SESSION, 401, &proxy), Said::Nothing);
    let grpc: [(&str, &[u8]); 2] = [("grpc-status", b"16"), ("authorization", b"Bearer t1")];
    assert_eq!(read_plain(SESSION, 200, &grpc), Said::Failure("invalid"));
}

#[test]
fn the_trailers_say_what_the_headers_do_not() {
    let failures = Failures::new(Rfc6750);
    let refresh = headers(&[("authorization", b"Bearer t1")]);
    let failed = headers(&[
        ("grpc-status", b"16"),
        ("grpc-message", b"Token not provided"),
    ]);
    let ok = headers(&[("grpc-status", b"0")]);
    let read_with = |trailers: &HeaderMap| {
        said(&read(
            SESSION,
            StatusCode::OK,
            &refresh,
            refresh.get(http::header::AUTHORIZATION),
            Some(trailers),
            &failures,
            |_| None,
        ))
    };
    assert_eq!(read_with(&failed), Said::Failure("invalid"));
    assert_eq!(read_with(&ok), Said::Refresh("t1".into(), 7));
    let refused = headers(&[
        ("grpc-status", b"16"),
        ("www-authenticate", br#"Bearer error="insufficient_scope""#),
    ]);
    assert_eq!(read_with(&refused), Said::Nothing);
}

/// Issue 26, bug 4: the token in use, first of values that disagree, is no refresh; the same
/// bytes repeated are.
#[test]
fn repeated_values_must_agree_even_when_the_first_is_in_use() {
    let failures = Failures::new(Rfc6750);
    let in_use = Token::new("t0").unwrap();
    let looked_up = std::cell::Cell::new(0);
    let lookup = |value: &HeaderValue| {
        looked_up.set(looked_up.get() + 1);
        in_use.is_header(value).then(|| in_use.clone())
    };
    let disagreeing = headers(&[
        ("authorization", b"Bearer t0"),
        ("authorization", b"Bearer t1"),
    ]);
    let reading = read(
        SESSION,
        StatusCode::OK,
        &disagreeing,
        disagreeing.get(http::header::AUTHORIZATION),
        None,
        &failures,
        lookup,
    );
    assert_eq!(said(&reading), Said::Nothing);
    assert_eq!(
        looked_up.get(),
        0,
        "the token in use was compared with the first value"
    );

    let twice = headers(&[
        ("authorization", b"Bearer t0"),
        ("authorization", b"Bearer t0"),
    ]);
    let reading = read(
        SESSION,
        StatusCode::OK,
        &twice,
        twice.get(http::header::AUTHORIZATION),
        None,
        &failures,
        lookup,
    );
    assert_eq!(said(&reading), Said::Refresh("t0".into(), 7));
    assert_eq!(looked_up.get(), 1);
    // Two spellings of one token agree; they are parsed.
    let spelled = headers(&[
        ("authorization", b"Bearer t0"),
        ("authorization", b"bearer:  t0"),
    ]);
    let reading = read(
        SESSION,
        StatusCode::OK,
        &spelled,
        spelled.get(http::header::AUTHORIZATION),
        None,
        &failures,
        |_| None,
    );
    assert_eq!(said(&reading), Said::Refresh("t0".into(), 7));
}
