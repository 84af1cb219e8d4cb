//! Property tests of the three readers of untrusted input: the token parser (`Token::new`), the
//! header readers (the `www-authenticate` challenges read by `Error::from_response`, and the
//! refreshed `authorization` the session layer reads off a response), and the session file
//! reader (`TokenStore::load` on a `TokenFile`). Any input yields a token that round-trips or a typed answer,
//! never a panic (the runner catches one and shrinks it to a minimal input).
//!
//! Files live on a memory filesystem where there is one: these tests are about parsing, and
//! `fsync` on a loaded disk would be most of their time. `RELIABILITY_SCALE=n` multiplies the
//! cases.

use std::cell::Cell;
use std::convert::Infallible;
use std::fs;
use tower_agent_session::store::TokenStore as _;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::{
    CorruptReason, Error, MalformedToken, Session, SessionLayer, Token, TokenFile,
};

mod reliability_common;
use reliability_common::{fast_tempdir, scaled, small_runtime};

const CASES: u64 = 256;

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: scaled(CASES) as u32,
        // A failure prints its minimal input; nothing is written next to the sources.
        failure_persistence: None,
        ..Config::default()
    })
}

/// RFC 6750 `b64token`: what must be accepted.
fn valid_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/-]{1,48}={0,3}"
}

/// Near misses: the token alphabet with the characters that break it mixed in.
fn near_miss() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/= \t\r\n,;:\"\\\\\0\u{7f}é-]{0,48}"
}

/// Anything: arbitrary Unicode, near misses, valid tokens, and lengths around the limit.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        near_miss(),
        valid_token(),
        (
            tower_agent_session::Token::MAX_LEN - 2..=tower_agent_session::Token::MAX_LEN + 2,
            "[a=]"
        )
            .prop_map(|(n, c)| c.repeat(n)),
    ]
}

fn check_token(input: &str) -> Result<(), TestCaseError> {
    match Token::new(input) {
        Ok(token) => {
            prop_assert_eq!(token.expose(), input);
            prop_assert_eq!(Token::new(token.expose()), Ok(token.clone()));
            let header = token.header_value();
            let expected = format!("Bearer {input}");
            prop_assert_eq!(header.as_bytes(), expected.as_bytes());
            prop_assert!(header.is_sensitive());
            prop_assert_eq!(format!("{token:?}"), "Token(<redacted>)");
            prop_assert_eq!(format!("{token}"), "<redacted>");
        }
        Err(MalformedToken::Empty) => prop_assert!(input.is_empty()),
        Err(MalformedToken::TooLong { len }) => {
            prop_assert_eq!(len, input.len());
            prop_assert!(len > tower_agent_session::Token::MAX_LEN);
        }
        Err(MalformedToken::InvalidCharacter { position }) => {
            prop_assert!(position < input.len());
        }
        Err(other) => return Err(TestCaseError::fail(format!("untyped: {other:?}"))),
    }
    Ok(())
}

#[test]
fn the_token_parser_round_trips_or_says_why() {
    let (accepted, refused) = (Cell::new(0u64), Cell::new(0u64));
    runner()
        .run(&any_text(), |input| {
            let ok = Token::new(input.as_str()).is_ok();
            accepted.set(accepted.get() + u64::from(ok));
            refused.set(refused.get() + u64::from(!ok));
            check_token(&input)
        })
        .unwrap();
    runner()
        .run(&valid_token(), |input| {
            prop_assert!(Token::new(input.as_str()).is_ok(), "{input:?} refused");
            accepted.set(accepted.get() + 1);
            check_token(&input)
        })
        .unwrap();
    println!(
        "token parser: {} inputs, {} accepted and round-tripped, {} refused with a typed reason",
        accepted.get() + refused.get(),
        accepted.get(),
        refused.get()
    );
}

/// Bytes that an `http::HeaderValue` can hold: visible ASCII, space, tab, and obs-text.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..max,
    )
}

/// Challenge-shaped text: the words and punctuation of RFC 9110 challenges, shuffled.
fn challenge_like() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just("Bearer"),
            Just("bearer"),
            Just("Basic"),
            Just("realm"),
            Just("error"),
            Just("invalid_token"),
            Just("invalid_request"),
            Just("insufficient_scope"),
            Just("error_description"),
            Just("="),
            Just("=="),
            Just("\""),
            Just("\\"),
            Just(","),
            Just(" "),
            Just("\t"),
            Just("abc"),
            Just("é"),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat().into_bytes())
}

#[test]
fn the_challenge_reader_never_panics_and_only_types_rejections() {
    let values = prop::collection::vec(prop_oneof![header_bytes(64), challenge_like()], 0..3);
    let message = prop::option::of("[ -~]{0,48}");
    let (typed, ignored) = (Cell::new(0u64), Cell::new(0u64));
    runner()
        .run(&(values, message, 0..4u8), |(values, message, shape)| {
            let mut headers = HeaderMap::new();
            for value in &values {
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            if let Some(message) = &message {
                headers.insert("grpc-message", HeaderValue::from_str(message).unwrap());
            }
            // 0: a success; 1: HTTP 401; 2: gRPC UNAUTHENTICATED; 3: another gRPC error.
            let status = if shape == 1 {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            match shape {
                2 => headers.insert("grpc-status", HeaderValue::from_static("16")),
                3 => headers.insert("grpc-status", HeaderValue::from_static("7")),
                _ => None,
            };
            let error = Error::from_parts(status, &headers);
            match shape {
                0 | 3 => prop_assert!(error.is_none(), "{error:?} from a non-rejection"),
                _ => prop_assert!(
                    error.as_ref().is_none_or(Error::is_session_failure),
                    "{error:?}"
                ),
            }
            typed.set(typed.get() + u64::from(error.is_some()));
            ignored.set(ignored.get() + u64::from(error.is_none()));

            // The same through tonic's `Status`.
            let status = tonic::Status::unauthenticated(message.unwrap_or_default());
            let error = Error::from_status(&status);
            prop_assert!(error.as_ref().is_some_and(Error::is_session_failure));
            Ok(())
        })
        .unwrap();
    println!(
        "challenge reader: {} header sets, {} typed as a session failure, {} not",
        typed.get() + ignored.get(),
        typed.get(),
        ignored.get()
    );
}

/// `Bearer <token>` as an agent might spell it: any case, spaces or tabs, the legacy colon,
/// blanks around. All of these must be taken.
fn well_formed_bearer() -> impl Strategy<Value = (Vec<u8>, String)> {
    (
        prop_oneof![
            Just("Bearer"),
            Just("bearer"),
            Just("BEARER"),
            Just("BeArEr")
        ],
        prop_oneof![Just(" "), Just("  "), Just("\t"), Just(": "), Just(":\t ")],
        valid_token(),
        prop_oneof![Just(""), Just(" "), Just("\t ")],
        prop_oneof![Just(""), Just(" "), Just(" \t")],
    )
        .prop_map(|(scheme, gap, token, before, after)| {
            (
                format!("{before}{scheme}{gap}{token}{after}").into_bytes(),
                token,
            )
        })
}

/// One call through the layer, from a session holding `good.token`, to an agent answering with
/// `value` in `authorization`. Returns the token in use and in the file afterwards.
fn refresh_with(value: &[u8]) -> (Option<Token>, Option<Token>) {
    let dir = fast_tempdir();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .watch(tower_agent_session::Watch::Off)
    .build();
    let value = HeaderValue::from_bytes(value).unwrap();
    let agent = tower::service_fn(move |_: Request<()>| {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(header::AUTHORIZATION, value.clone());
        async move { Ok::<_, Infallible>(response) }
    });
    small_runtime().block_on(async {
        session
            .start_with_token(Token::new("good.token").unwrap())
            .await
            .unwrap();
        SessionLayer::new(session.clone())
            .layer(agent)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        session.flush().await.unwrap();
    });
    (
        session.token(),
        session.file().unwrap().load().unwrap().token,
    )
}

/// `Bearer`-ish prefixes before near-miss tokens, all bytes a header can hold.
fn bearer_ish() -> impl Strategy<Value = Vec<u8>> {
    (
        "[ \t]{0,2}[Bb][Ee][Aa][Rr][Ee][Rr][ :\t]{0,3}",
        "[A-Za-z0-9._~+/= \t,;:\"\\\\é-]{0,48}",
    )
        .prop_map(|(a, b)| format!("{a}{b}").into_bytes())
}

#[test]
fn the_refresh_reader_takes_only_whole_tokens() {
    let good = Token::new("good.token").unwrap();
    let (taken, left) = (Cell::new(0u64), Cell::new(0u64));
    runner()
        .run(&prop_oneof![header_bytes(64), bearer_ish()], |value| {
            let (in_use, on_disk) = refresh_with(&value);
            prop_assert_eq!(&in_use, &on_disk, "memory and file agree");
            let token = in_use.expect("a token");
            if token == good {
                left.set(left.get() + 1);
            } else {
                // Whatever was taken is a whole token, from the end of the value.
                prop_assert_eq!(Token::new(token.expose()), Ok(token.clone()));
                prop_assert!(value.trim_ascii_end().ends_with(token.expose().as_bytes()));
                taken.set(taken.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(&well_formed_bearer(), |(value, token)| {
            let (in_use, on_disk) = refresh_with(&value);
            let token = Token::new(token).unwrap();
            prop_assert_eq!(
                in_use.as_ref(),
                Some(&token),
                "{:?}",
                String::from_utf8_lossy(&value)
            );
            prop_assert_eq!(on_disk.as_ref(), Some(&token));
            taken.set(taken.get() + 1);
            Ok(())
        })
        .unwrap();
    println!(
        "refresh reader: {} response headers through the layer, {} taken as a whole token \
         (memory and file agreeing), {} left the old token in place",
        taken.get() + left.get(),
        taken.get(),
        left.get()
    );
}

/// File contents: arbitrary bytes, text around a token, and sizes around the cap.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        "[ \t\r\n]{0,8}".prop_map(String::into_bytes),
        (
            "[ \t\r\n]{0,4}",
            any_text(),
            "[ \t\r\n\u{b}\u{c}\u{a0}\u{2003}]{0,4}"
        )
            .prop_map(|(a, t, b)| format!("{a}{t}{b}").into_bytes()),
        (tower_agent_session::TokenFile::MAX_LEN as usize - 1
            ..=tower_agent_session::TokenFile::MAX_LEN as usize + 1)
            .prop_map(|n| {
                let mut bytes = vec![b'a'; tower_agent_session::Token::MAX_LEN];
                bytes.resize(n, b'\n');
                bytes
            }),
    ]
}

#[test]
fn the_file_reader_round_trips_or_gives_a_typed_error() {
    let dir = fast_tempdir();
    let file = TokenFile::in_dir(dir.path());
    let (tokens, blank, errors) = (Cell::new(0u64), Cell::new(0u64), Cell::new(0u64));
    runner()
        .run(&file_bytes(), |bytes| {
            fs::write(file.path(), &bytes).unwrap();
            let text = std::str::from_utf8(&bytes);
            match file.load().map(|stored| stored.token) {
                Ok(None) => {
                    prop_assert!(text.is_ok_and(|t| t.trim().is_empty()));
                    blank.set(blank.get() + 1);
                }
                Ok(Some(token)) => {
                    prop_assert_eq!(Ok(token.expose()), text.map(str::trim));
                    file.store(&token).unwrap();
                    prop_assert_eq!(file.load().unwrap().token, Some(token.clone()));
                    prop_assert_eq!(
                        fs::read(file.path()).unwrap(),
                        format!("{}\n", token.expose()).into_bytes()
                    );
                    tokens.set(tokens.get() + 1);
                }
                Err(Error::CorruptFile { path, reason }) => {
                    prop_assert_eq!(&path, file.path());
                    match reason {
                        CorruptReason::TooLarge { len, limit } => {
                            prop_assert_eq!(limit, tower_agent_session::TokenFile::MAX_LEN);
                            prop_assert_eq!(len, bytes.len() as u64);
                            prop_assert!(len > tower_agent_session::TokenFile::MAX_LEN);
                        }
                        CorruptReason::NotUtf8 => prop_assert!(text.is_err()),
                        CorruptReason::Malformed(why) => {
                            let trimmed = text.map(str::trim).unwrap();
                            prop_assert_eq!(Token::new(trimmed).err(), Some(why));
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                    errors.set(errors.get() + 1);
                }
                Err(other) => prop_assert!(false, "untyped: {other:?}"),
            }
            Ok(())
        })
        .unwrap();
    println!(
        "file reader: {} contents, {} tokens round-tripped through write and read, {} blank, \
         {} typed CorruptFile errors",
        tokens.get() + blank.get() + errors.get(),
        tokens.get(),
        blank.get(),
        errors.get()
    );
}
