use super::*;

use base64::Engine as _;

fn jwt(payload: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64.encode(payload)
    )
}

#[test]
fn accepts_the_b64token_alphabet() {
    for ok in ["a", "AZaz09-._~+/", "abc=", "abc==", "x.y.z"] {
        assert!(Token::new(ok).is_ok(), "{ok}");
    }
}

#[test]
fn rejects_everything_else() {
    assert_eq!(Token::new(""), Err(MalformedToken::Empty));
    assert_eq!(
        Token::new("="),
        Err(MalformedToken::InvalidCharacter { position: 0 })
    );
    assert_eq!(
        Token::new("ab=c"),
        Err(MalformedToken::InvalidCharacter { position: 3 })
    );
    for (bad, at) in [
        ("a b", 1),
        ("ab\r\n", 2),
        ("a\0", 1),
        ("é", 0),
        ("a\t", 1),
        ("a,b", 1),
        ("a\"", 1),
    ] {
        assert_eq!(
            Token::new(bad),
            Err(MalformedToken::InvalidCharacter { position: at }),
            "{bad:?}"
        );
    }
    let long = "a".repeat(Token::MAX_LEN + 1);
    assert_eq!(
        Token::new(long),
        Err(MalformedToken::TooLong {
            len: Token::MAX_LEN + 1
        })
    );
    assert!(Token::new("a".repeat(Token::MAX_LEN)).is_ok());
}

#[test]
fn never_prints_the_value() {
    let token = Token::new("s3cr3t").unwrap();
    assert!(!format!("{token:?}").contains("s3cr3t"));
    assert!(!format!("{token}").contains("s3cr3t"));
    assert!(!format!("{:?}", token.header_value()).contains("s3cr3t"));
}

#[test]
fn reads_the_token_of_response_headers_as_a_refresh() {
    let headers = |values: &[&'static str]| {
        let mut map = http::HeaderMap::new();
        for v in values {
            map.append(http::header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        map
    };
    let read = |values: &[&'static str]| {
        Token::from_headers(&headers(values)).map(|t| t.map(|t| t.expose().to_owned()))
    };
    assert_eq!(read(&[]), Ok(None));
    for same in [
        &["Bearer abc"][..],
        &["bearer: abc"],
        &["  BEARER\tabc "],
        &["Bearer abc", "bearer abc"],
    ] {
        assert_eq!(read(same), Ok(Some("abc".into())), "{same:?}");
    }
    assert_eq!(read(&["Basic abc"]), Err(MalformedToken::NotBearer));
    assert_eq!(
        read(&["Bearer abc", "Bearer abd"]),
        Err(MalformedToken::Conflicting)
    );
    assert_eq!(
        read(&["Bearer a,b"]),
        Err(MalformedToken::InvalidCharacter { position: 1 })
    );
    #[cfg(feature = "tonic")]
    {
        let metadata = tonic::metadata::MetadataMap::from_headers(headers(&["Bearer abc"]));
        let token = Token::from_metadata(&metadata).unwrap().unwrap();
        assert_eq!(token.expose(), "abc");
        assert!(token.header_value().is_sensitive());
    }
}

#[test]
fn header_is_bearer_and_sensitive() {
    let token = Token::new("abc").unwrap();
    let header = token.header_value();
    assert_eq!(header.as_bytes(), b"Bearer abc");
    assert!(header.is_sensitive());
}

/// Claims are a JSON object of valid UTF-8: serde's derive would take an array for the
/// struct, and does not check the strings of the fields it skips.
#[test]
fn claims_must_be_an_object_of_valid_utf8() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = |claims: &[u8]| format!("e30.{}.c2ln", b64.encode(claims));
    for claims in [
        &b"[1700000000]"[..],
        b"{\"exp\":1,\"x\":\"\xf8\"}",
        b"{\"x\":\"\xf8\",\"exp\":1}",
        b"{\"exp\":1}\xf8",
        b"\xef\xbb\xbf{\"exp\":1}",
    ] {
        let token = Token::new(raw(claims)).unwrap();
        assert_eq!(
            token.exp_secs(),
            None,
            "{:?}",
            String::from_utf8_lossy(claims)
        );
    }
    assert_eq!(Token::new(raw(b"{\"exp\":1}")).unwrap().exp_secs(), Some(1));
}

#[test]
fn reads_jwt_expiry() {
    assert_eq!(
        Token::new(jwt(r#"{"exp":1700000000}"#)).unwrap().exp_secs(),
        Some(1_700_000_000)
    );
    assert_eq!(
        Token::new(jwt(r#"{"exp":1700000000.7}"#))
            .unwrap()
            .exp_secs(),
        Some(1_700_000_000)
    );
    assert_eq!(Token::new(jwt(r#"{"iat":1}"#)).unwrap().exp_secs(), None);
    assert_eq!(Token::new(jwt(r#"{"exp":-5}"#)).unwrap().exp_secs(), None);
    for huge in [
        r#"{"exp":1e19}"#,
        r#"{"exp":1e300}"#,
        r#"{"exp":18446744073709551615}"#,
    ] {
        let token = Token::new(jwt(huge)).unwrap();
        assert!(token.exp_secs().is_some());
        assert_eq!(token.expires_at(), None, "{huge}");
    }
    assert_eq!(Token::new(jwt("not json")).unwrap().exp_secs(), None);
    assert_eq!(
        Token::new(jwt(" \n{\"exp\":7}")).unwrap().exp_secs(),
        Some(7)
    );
    assert_eq!(Token::new("opaque").unwrap().exp_secs(), None);
    assert_eq!(Token::new("a.b.c.d").unwrap().exp_secs(), None);
}

/// Issue 26, item 8: an `exp` past what a `SystemTime` holds (on Unix, `i64::MAX` seconds after
/// the epoch) is no time, so the token has no `expires_at`: it is never due for renewal, and the
/// agent refuses it as malformed however it is signed. The last second a `SystemTime` holds is
/// a time like any other.
#[test]
fn an_exp_past_any_time_is_no_expiry() {
    let last = i64::MAX.unsigned_abs();
    let token = Token::new(jwt(&format!(r#"{{"exp":{last}}}"#))).unwrap();
    assert_eq!(
        token.expires_at(),
        UNIX_EPOCH.checked_add(Duration::from_secs(last))
    );
    // Windows' `SystemTime` (100 ns since 1601) ends sooner: there the last second is no time
    // either, as the line above says.
    if cfg!(unix) {
        assert!(token.expires_at().is_some());
    }
    for past in [
        format!(r#"{{"exp":{}}}"#, last + 1),
        r#"{"exp":1e300}"#.to_owned(),
    ] {
        let token = Token::new(jwt(&past)).unwrap();
        assert_eq!(token.expires_at(), None, "{past}");
        assert!(token.exp_secs().is_some_and(|exp| exp > last), "{past}");
    }
}

/// A refresh's token is the response's own `authorization` value: its bytes, not a copy, and
/// marked sensitive; a value with more around the token (white space, another spelling of the
/// scheme) is made again.
#[test]
fn a_refresh_keeps_the_response_value() {
    let value =
        HeaderValue::from_maybe_shared(bytes::Bytes::from_static(b"Bearer eyJh.e30.c2ln")).unwrap();
    let token = crate::bearer::parse_bearer(&value).unwrap();
    assert_eq!(
        token.header_value().as_bytes().as_ptr(),
        value.as_bytes().as_ptr()
    );
    assert!(token.header_value().is_sensitive());
    let spaced = HeaderValue::from_static("bearer   eyJh.e30.c2ln ");
    let token = crate::bearer::parse_bearer(&spaced).unwrap();
    assert_ne!(
        token.header_value().as_bytes().as_ptr(),
        spaced.as_bytes().as_ptr()
    );
    assert_eq!(token.header_value().as_bytes(), b"Bearer eyJh.e30.c2ln");
}
