use super::*;
use http::{HeaderMap, header};

fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap()
}

#[test]
fn parses_bearer_forms() {
    for ok in [
        "Bearer abc",
        "bearer abc",
        "BEARER   abc",
        " Bearer abc ",
        "Bearer: abc",
        "Bearer:abc ",
        "Bearer\tabc",
    ] {
        let parsed = parse_bearer(&header_value(ok.as_bytes()));
        if ok == "Bearer:abc " {
            assert_eq!(parsed, Err(MalformedToken::NotBearer), "{ok:?}");
        } else {
            assert_eq!(
                parsed.map(|t| t.expose().to_owned()),
                Ok("abc".into()),
                "{ok:?}"
            );
        }
    }
    assert_eq!(
        parse_bearer(&header_value(b"Basic abc")),
        Err(MalformedToken::NotBearer)
    );
    assert_eq!(
        parse_bearer(&header_value(b"Bearerabc")),
        Err(MalformedToken::NotBearer)
    );
    assert_eq!(
        parse_bearer(&header_value(b"Bearer")),
        Err(MalformedToken::NotBearer)
    );
    assert!(matches!(
        parse_bearer(&header_value(b"Bearer a b")),
        Err(MalformedToken::InvalidCharacter { .. })
    ));
    assert!(matches!(
        parse_bearer(&header_value(b"Bearer \xff")),
        Err(MalformedToken::InvalidCharacter { .. })
    ));
    assert!(matches!(
        parse_bearer(&header_value(b"Bearer  ")),
        Err(MalformedToken::NotBearer)
    ));
}

#[test]
fn repeated_headers_must_agree() {
    let mut headers = HeaderMap::new();
    assert!(Token::from_headers(&headers).transpose().is_none());
    headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
    headers.append(header::AUTHORIZATION, HeaderValue::from_static("bearer a"));
    assert!(matches!(
        Token::from_headers(&headers).transpose(),
        Some(Ok(_))
    ));
    headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
    assert_eq!(
        Token::from_headers(&headers)
            .transpose()
            .map(|r| r.map(|_| ())),
        Some(Err(MalformedToken::Conflicting))
    );
}

fn classify(values: &[&'static str]) -> Verdict {
    let values: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_static(v)).collect();
    read_challenges(&values)
}

#[test]
fn classifies_challenges() {
    assert_eq!(classify(&[r#"Bearer realm="agent""#]), Verdict::NotProvided);
    assert_eq!(classify(&["Bearer"]), Verdict::NotProvided);
    assert_eq!(
        classify(&[
            r#"Bearer realm="agent", error="invalid_token", error_description="expired, \"really\"""#
        ]),
        Verdict::Invalid
    );
    assert_eq!(
        classify(&[r#"bearer error=invalid_token"#]),
        Verdict::Invalid
    );
    assert_eq!(
        classify(&[r#"Bearer error="invalid_request""#]),
        Verdict::NotProvided
    );
    assert_eq!(
        classify(&[r#"Bearer error="insufficient_scope""#]),
        Verdict::NotSession
    );
    // A bare challenge beside one naming another error, in one value or in two: the bare
    // one says no usable token was sent, whatever the other says, and in either order.
    for values in [
        &[r#"Bearer, Bearer error="insufficient_scope""#][..],
        &[r#"Bearer error="insufficient_scope", Bearer"#],
        &["Bearer", r#"Bearer error="insufficient_scope""#],
        &[r#"Bearer error="insufficient_scope""#, "Bearer"],
    ] {
        assert_eq!(classify(values), Verdict::NotProvided, "{values:?}");
    }
    assert_eq!(classify(&[r#"Basic realm="x""#]), Verdict::NotSession);
    assert_eq!(classify(&[]), Verdict::NoChallenge);
    assert_eq!(
        classify(&[r#"Basic realm="x", Bearer realm="y", error="invalid_token""#]),
        Verdict::Invalid
    );
    assert_eq!(
        classify(&[r#"Newauth realm="apps", type=1, title="Login", Bearer"#]),
        Verdict::NotProvided
    );
    assert_eq!(
        classify(&["Negotiate abc==, Bearer error=invalid_token"]),
        Verdict::Invalid
    );
    assert_eq!(
        classify(&["Bearer realm=\"x\"", "Bearer error=\"invalid_token\""]),
        Verdict::Invalid
    );
    // Escapes are undone before the code is compared; a value is compared whole.
    assert_eq!(
        classify(&[r#"Bearer error="invalid\_tok\en""#]),
        Verdict::Invalid
    );
    assert_eq!(
        classify(&[r#"Bearer error="invalid_token\"", Basic"#]),
        Verdict::NotSession
    );
    assert_eq!(
        classify(&[r#"Bearer error="invalid_tokens""#]),
        Verdict::NotSession
    );
    assert_eq!(
        classify(&["Bearer error=\"invalid_token\\"]),
        Verdict::Invalid
    );
    assert_eq!(
        classify(&[r#"Bearer error="x\"", error=invalid_token"#]),
        Verdict::NotSession
    );
    for junk in [
        "",
        ",,,",
        "=",
        "\"",
        "Bearer =",
        "Bearer error=\"unterminated",
        "= = ,\" Bearer",
    ] {
        let _ = classify(&[junk]);
    }
}

/// A quoted-string may hold obs-text (RFC 9110: bytes 0x80 to 0xff), which makes the header
/// no text: its challenge is read all the same (found by the `layer` fuzz target).
#[test]
fn obs_text_in_a_quoted_string_leaves_the_challenge_readable() {
    for value in [
        &b"Bearer realm=\"agent\", error=\"invalid_token\", error_description=\"tok\xd1\xa8 expired\""[..],
        b"Bearer error=\"invalid_token\", error_description=\"\xff\xfe\"",
        b"Bearer error_description=\"caf\xe9\", error=\"invalid_token\"",
    ] {
        assert_eq!(read_challenges([&header_value(value)]), Verdict::Invalid, "{value:?}");
    }
    assert_eq!(
        read_challenges([&header_value(b"Bearer realm=\"\xe9\"")]),
        Verdict::NotProvided
    );
}
