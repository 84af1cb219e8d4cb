use super::*;

fn response(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
    let mut builder = http::Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).unwrap()
}

#[test]
fn messages_and_exit_codes_are_the_contract() {
    assert_eq!(
        Error::TokenNotProvided.to_string(),
        Error::TOKEN_NOT_PROVIDED_MESSAGE
    );
    assert_eq!(
        Error::TokenInvalid.to_string(),
        Error::TOKEN_INVALID_MESSAGE
    );
    assert_eq!(Error::TokenNotProvided.exit_code(), 77);
    assert_eq!(Error::TokenInvalid.exit_code(), 65);
    let denied = Error::read(
        Path::new("/x"),
        io::Error::from(io::ErrorKind::PermissionDenied),
    );
    assert_eq!(denied.exit_code(), 77);
    let io = Error::read(Path::new("/x"), io::Error::other("boom"));
    assert_eq!(io.exit_code(), 74);
    let full = Error::write(Path::new("/x"), io::Error::from(io::ErrorKind::StorageFull));
    assert_eq!(full.exit_code(), 73);
}

#[test]
fn classifies_http_rejections() {
    let not_provided = response(401, &[("www-authenticate", r#"Bearer realm="agent""#)]);
    assert!(matches!(
        Error::from_response(&not_provided),
        Some(Error::TokenNotProvided)
    ));
    let invalid = response(
        401,
        &[(
            "www-authenticate",
            r#"Bearer realm="agent", error="invalid_token""#,
        )],
    );
    assert!(matches!(
        Error::from_response(&invalid),
        Some(Error::TokenInvalid)
    ));
    assert!(matches!(
        Error::from_response(&response(401, &[])),
        Some(Error::TokenInvalid)
    ));
    assert!(Error::from_response(&response(200, &[])).is_none());
    assert!(Error::from_response(&response(403, &[("www-authenticate", "Bearer")])).is_none());
    let scope = response(
        401,
        &[("www-authenticate", r#"Bearer error="insufficient_scope""#)],
    );
    assert!(Error::from_response(&scope).is_none());
}

#[test]
fn classifies_grpc_trailers_only_rejections() {
    let grpc = response(
        200,
        &[
            ("grpc-status", "16"),
            (
                "grpc-message",
                "JWT%20Token%20not%20provided%20in%20metadata",
            ),
        ],
    );
    assert!(matches!(
        Error::from_response(&grpc),
        Some(Error::TokenNotProvided)
    ));
    let grpc = response(200, &[("grpc-status", "16")]);
    assert!(matches!(
        Error::from_response(&grpc),
        Some(Error::TokenInvalid)
    ));
    let ok = response(200, &[("grpc-status", "0")]);
    assert!(Error::from_response(&ok).is_none());
}

/// A `%` not followed by two hex digits is kept as it is; the rest is decoded.
#[test]
fn percent_decoding_is_forgiving() {
    let not_provided = |message: &str| {
        let headers = [("grpc-status", "16"), ("grpc-message", message)];
        matches!(
            Error::from_response(&response(200, &headers)),
            Some(Error::TokenNotProvided)
        )
    };
    assert!(not_provided("JWT%20Token%20not%20provided%20in%20metadata"));
    assert!(not_provided(
        "% %2 %zz%4AWT Token not provided in metadata%"
    ));
    assert!(!not_provided("JWT%2GToken not provided in metadata"));
}

/// tonic hands a `Status` its message decoded: a `%4A` in it is what the agent said, not a `J`,
/// and must not be decoded a second time. The wire's `%254A` is tonic's `%4A`.
#[cfg(feature = "tonic")]
#[test]
fn a_status_message_is_percent_decoded_once() {
    use crate::{Polykey, Rfc6750};

    let literal = tonic::Status::unauthenticated("%4AWT Token not provided in metadata");
    assert!(matches!(
        Error::from_status(&literal),
        Some(Error::TokenInvalid)
    ));
    for failures in [&Rfc6750 as &dyn crate::SessionFailures, &Polykey] {
        assert!(
            matches!(
                Error::from_status_with(&literal, failures),
                Some(Error::TokenInvalid)
            ),
            "{failures:?}"
        );
    }
    let wire = response(
        200,
        &[
            ("grpc-status", "16"),
            (
                "grpc-message",
                "%254AWT%20Token%20not%20provided%20in%20metadata",
            ),
        ],
    );
    assert!(matches!(
        Error::from_response(&wire),
        Some(Error::TokenInvalid)
    ));

    // The contract's message is still read, with text around it that is not ASCII.
    for message in [
        Error::TOKEN_NOT_PROVIDED_MESSAGE,
        "JWT Token not provided in metadata — 100% sure",
    ] {
        let status = tonic::Status::unauthenticated(message);
        assert!(
            matches!(Error::from_status(&status), Some(Error::TokenNotProvided)),
            "{message}"
        );
        assert!(
            matches!(
                Error::from_status_with(&status, &Rfc6750),
                Some(Error::TokenNotProvided)
            ),
            "{message}"
        );
    }
}

/// What `from_status_with` hands `failures`: the message as it was on the wire.
#[cfg(feature = "tonic")]
#[test]
fn percent_encoding_is_grpcs() {
    /// Keeps the `grpc-message` it is handed.
    #[derive(Debug, Default)]
    struct Seen(std::sync::Mutex<Option<String>>);
    impl crate::SessionFailures for Seen {
        fn session_failure(&self, _: http::StatusCode, headers: &http::HeaderMap) -> Option<Error> {
            let message = headers
                .get("grpc-message")
                .map(|v| v.to_str().unwrap().to_owned());
            *self.0.lock().unwrap() = message;
            None
        }
    }
    let on_the_wire = |message: &str| {
        let seen = Seen::default();
        assert!(Error::from_status_with(&tonic::Status::unknown(message), &seen).is_none());
        seen.0.into_inner().unwrap().unwrap()
    };
    assert_eq!(on_the_wire("a b%c"), "a b%25c");
    assert_eq!(on_the_wire("é\n"), "%C3%A9%0A");
    assert_eq!(on_the_wire("x%41 — é\t"), "x%2541 %E2%80%94 %C3%A9%09");
}
