use super::*;

use base64::Engine as _;
use proptest::prelude::*;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The one `exp` of an object of valid UTF-8, as seconds: with the members other than `exp`
/// read as `read_others` (`Value` or `IgnoredAny`), through a visitor of its own that counts
/// the `exp`s it sees (a derived struct refuses a second).
fn read_exp(json: &[u8], others_as_values: bool) -> Option<u64> {
    struct Exp(bool);
    impl<'de> Visitor<'de> for Exp {
        type Value = Option<serde_json::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut exp = None;
            while let Some(name) = map.next_key::<String>()? {
                if name == "exp" {
                    if exp.is_some() {
                        return Err(de::Error::duplicate_field("exp"));
                    }
                    exp = Some(map.next_value::<serde_json::Value>()?);
                } else if self.0 {
                    map.next_value::<serde_json::Value>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(exp)
        }
    }
    let text = std::str::from_utf8(json).ok()?;
    let mut reader = serde_json::Deserializer::from_str(text);
    let exp = reader.deserialize_map(Exp(others_as_values)).ok()?;
    reader.end().ok()?;
    let n = exp?.as_number()?.clone();
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// What the fuzz target holds `exp_claim` to: the other members skipped, as serde skips a
/// field a derived struct does not know.
fn reference(json: &[u8]) -> Option<u64> {
    read_exp(json, false)
}

/// The stricter reading of the hand-written reader this replaced: every member read as
/// serde_json's `Value`.
fn as_values(json: &[u8]) -> Option<u64> {
    read_exp(json, true)
}

/// `exp_claim` finds `exp` in `json`, as both readings do.
#[track_caller]
fn agrees(json: &[u8], exp: Option<u64>) {
    let shown = String::from_utf8_lossy(json);
    assert_eq!(reference(json), exp, "the reference on {shown:?}");
    assert_eq!(as_values(json), exp, "`Value` on {shown:?}");
    assert_eq!(exp_claim(json), exp, "{shown:?}");
}

/// `exp_claim` finds `exp` in `json`, whose other members `Value` refuses: a number out of
/// `f64`'s range, a lone surrogate, containers past serde_json's recursion limit.
#[track_caller]
fn skips(json: &[u8], exp: u64) {
    let shown = String::from_utf8_lossy(json);
    assert_eq!(reference(json), Some(exp), "the reference on {shown:?}");
    assert_eq!(as_values(json), None, "`Value` on {shown:?}");
    assert_eq!(exp_claim(json), Some(exp), "{shown:?}");
}

#[test]
fn reads_a_top_level_integer_exp() {
    agrees(
        br#"{"iat":1764633600,"exp":1764637200,"jti":"0af3"}"#,
        Some(1_764_637_200),
    );
    agrees(b" {\n\"exp\" :\t7 } \r\n", Some(7));
    agrees(br#"{"exp":0}"#, Some(0));
    agrees(br#"{"exp":18446744073709551615}"#, Some(u64::MAX));
    agrees(br#"{"a":{"exp":1}}"#, None);
    agrees(br#"{"a":[{"exp":1}],"exp":2}"#, Some(2));
    agrees(br#"{}"#, None);
}

/// Numbers as serde_json reads them: a fraction rounds down, a negative or an `exp` out of
/// range is none.
#[test]
fn numbers_are_serde_json_s() {
    agrees(br#"{"exp":1700000000.7}"#, Some(1_700_000_000));
    agrees(br#"{"exp":1.7e9}"#, Some(1_700_000_000));
    agrees(br#"{"exp":-5}"#, None);
    agrees(br#"{"exp":-0}"#, Some(0));
    agrees(br#"{"exp":-0.0}"#, Some(0));
    agrees(br#"{"exp":-1e-400}"#, Some(0));
    agrees(br#"{"exp":1e19}"#, Some(10_000_000_000_000_000_000));
    agrees(br#"{"exp":18446744073709551616}"#, Some(u64::MAX));
    agrees(br#"{"exp":-9223372036854775809}"#, None);
    agrees(br#"{"exp":1e400}"#, None);
    // Out of range elsewhere: skipped, where `Value` refuses the whole object.
    skips(br#"{"exp":1,"x":1e400}"#, 1);
    skips(br#"{"exp":1,"x":[1,2e309]}"#, 1);
    skips(&[br#"{"exp":1,"x":1"#, &[b'0'; 400][..], b"}"].concat(), 1);
    agrees(br#"{"exp":1,"x":-1.5e-3}"#, Some(1));
    for bad in [
        &br#"{"exp":01}"#[..],
        br#"{"exp":1.}"#,
        br#"{"exp":.5}"#,
        br#"{"exp":+1}"#,
        br#"{"exp":1e}"#,
        br#"{"exp":-}"#,
        br#"{"exp":1-2}"#,
        br#"{"exp":1,"x":00}"#,
        br#"{"exp":1,"x":1.2.3}"#,
    ] {
        agrees(bad, None);
    }
    agrees(br#"{"exp":"1"}"#, None);
    agrees(br#"{"exp":null}"#, None);
}

/// `exp` named twice, escapes undone, gives none, as a derived struct refuses the field.
#[test]
fn exp_named_twice_is_none() {
    agrees(br#"{"exp":1,"exp":1}"#, None);
    agrees(br#"{"exp":1,"\u0065xp":2}"#, None);
    agrees(br#"{"\u0065x\u0070":3}"#, Some(3));
    agrees(br#"{"ex\np":3}"#, None);
    agrees(br#"{"exp\u0000":3}"#, None);
    agrees(br#"{"exp":"x","exp":1}"#, None);
    agrees(br#"{"exp":null,"exp":1}"#, None);
    agrees(br#"{"a":{"exp":1,"exp":2},"exp":3}"#, Some(3));
}

/// Strings: escapes checked, no raw control character; surrogates paired in names, not in
/// the values skipped.
#[test]
fn strings_are_checked() {
    agrees(
        br#"{"exp":1,"x":"a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00"}"#,
        Some(1),
    );
    agrees("{\"exp\":1,\"x\":\"é😀\u{7f}\"}".as_bytes(), Some(1));
    for lone in [
        &br#"{"exp":1,"x":"\uD83D"}"#[..],
        br#"{"exp":1,"x":"\uDE00"}"#,
        br#"{"exp":1,"x":"\uD83D\n"}"#,
        br#"{"exp":1,"x":"\uD83D\uD83D"}"#,
        br#"{"exp":1,"x":{"\uDE00":0}}"#,
    ] {
        skips(lone, 1);
    }
    for bad in [
        &br#"{"exp":1,"x":"\u12"}"#[..],
        br#"{"exp":1,"x":"\u12G4"}"#,
        br#"{"exp":1,"x":"\x"}"#,
        b"{\"exp\":1,\"x\":\"a\tb\"}",
        b"{\"exp\":1,\"x\":\"\x1f\"}",
        br#"{"exp":1,"x":"unterminated}"#,
        br#"{"exp":1,"\uDE00":0}"#,
        b"{\"exp\":1,\"x\":\"\xf8\"}",
    ] {
        agrees(bad, None);
    }
}

#[test]
fn the_grammar_is_json_s() {
    agrees(
        br#"{"exp":1,"x":[true,false,null,{},[],{"a":[1,{"b":null}]}]}"#,
        Some(1),
    );
    for bad in [
        &br#"[1700000000]"#[..],
        br#"{"exp":1,}"#,
        br#"{,"exp":1}"#,
        br#"{"exp" 1}"#,
        br#"{"exp":1 "x":2}"#,
        br#"{"exp":1,"x":[1,]}"#,
        br#"{"exp":1,"x":[,1]}"#,
        br#"{"exp":1,"x":[1 2]}"#,
        br#"{"exp":1,"x":{"a"}}"#,
        br#"{"exp":1,"x":{1:2}}"#,
        br#"{"exp":1,"x":tru}"#,
        br#"{"exp":1,"x":nul}"#,
        br#"{"exp":1,"x":True}"#,
        br#"{"exp":1,"x":[}"#,
        br#"{"exp":1,"x":{]}"#,
        br#"{"exp":1} {}"#,
        br#"{"exp":1}x"#,
        br#"{"exp":1"#,
        b"{\"exp\":1}\x0b",
        b"\xef\xbb\xbf{\"exp\":1}",
        b"",
        b"   ",
        b"\"exp\"",
    ] {
        agrees(bad, None);
    }
}

/// Containers skipped are not counted against serde_json's recursion limit (127 open at
/// once); an `exp` that is one is no number, however deep.
#[test]
fn depth_of_what_is_skipped_is_not_limited() {
    let nested = |arrays: usize| {
        let mut json = br#"{"exp":1,"x":"#.to_vec();
        json.extend(std::iter::repeat_n(b'[', arrays));
        json.extend(std::iter::repeat_n(b']', arrays));
        json.push(b'}');
        json
    };
    agrees(&nested(126), Some(1));
    skips(&nested(127), 1);
    skips(&nested(10_000), 1);
    let mut unclosed = nested(10_000);
    unclosed.truncate(unclosed.len() - 2);
    unclosed.push(b'}');
    agrees(&unclosed, None);
    let mut exp_deep = br#"{"exp":"#.to_vec();
    exp_deep.extend(std::iter::repeat_n(b'[', 127));
    exp_deep.extend(std::iter::repeat_n(b']', 127));
    exp_deep.push(b'}');
    agrees(&exp_deep, None);
}

fn jwt(claims: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl", b64.encode(claims))
}

fn exp_of_jwt(token: &[u8]) -> Option<u64> {
    read(token).and_then(|(_, exp)| exp)
}

#[test]
fn a_jwt_is_three_parts_its_claims_canonical_base64url() {
    assert_eq!(read(b"ab.e30.cd=="), Some(([&b"ab"[..], b"cd=="], None)));
    assert_eq!(exp_of_jwt(jwt(r#"{"exp":7}"#).as_bytes()), Some(7));
    assert_eq!(exp_of_jwt(b"eyJh.eyJleHAiOjd9.c2ln"), Some(7));
    assert_eq!(exp_of_jwt(b".eyJleHAiOjd9."), Some(7));
    // The outer parts are any `b64token`'s.
    assert_eq!(exp_of_jwt(b"+~/.eyJleHAiOjd9.c2ln=="), Some(7));
    assert_eq!(exp_of_jwt(b"e30.eyJleHAiOjd9IA.c2ln"), Some(7)); // `{"exp":7} `
    for other in [
        &b"eyJh.eyJleHAiOjd9"[..],
        b"eyJh.eyJleHAiOjd9.c2ln.x",
        b"eyJh.eyJleHAiOjd+.c2ln",
        b"eyJh.eyJleHAiOjd9IA==.c2ln", // padded
        b"eyJh.eyJleHAiOjd9IB.c2ln",   // stray bits in the last character
        b"eyJh.eyJleHAiOjd9I.c2ln",    // a length no encoding has
        b"eyJleHAiOjd9",
    ] {
        assert_eq!(
            exp_of_jwt(other),
            None,
            "{}",
            String::from_utf8_lossy(other)
        );
    }
}

/// JSON-ish text from a small alphabet, so that most of it is nearly valid.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &b"{"[..],
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\"",
        b"\"exp\"",
        b"\"exp\":",
        b"\"\\u0065xp\"",
        b"\"x\":",
        b"\\",
        b"\\u",
        b"D83D",
        b"DE00",
        b"0",
        b"1",
        b"-",
        b".",
        b"e",
        b"5",
        b"1e400",
        b"1764637200",
        b"18446744073709551616",
        b"true",
        b"null",
        b"\n",
        b"\x01",
        "é".as_bytes(),
        b"\xff",
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|pieces| {
        let mut json = b"{".to_vec();
        pieces.into_iter().for_each(|p| json.extend_from_slice(p));
        json
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The reference on any text, and `Value`'s reading wherever it finds an `exp`.
    #[test]
    fn agrees_with_serde_json(json in jsonish()) {
        let shown = String::from_utf8_lossy(&json);
        prop_assert_eq!(exp_claim(&json), reference(&json), "{:?}", shown);
        if let Some(exp) = as_values(&json) {
            prop_assert_eq!(exp_claim(&json), Some(exp), "{:?}", shown);
        }
    }
}

/// The agents' form is read without serde_json, as serde_json reads it; anything near it that
/// is not that form is serde_json's to decide.
#[test]
fn the_agents_form_is_read_plain() {
    let agent = br#"{"iat":1764633600,"exp":1764637200,"jti":"0af3 x"}"#;
    assert_eq!(plain_exp(agent), Some(1764637200));
    agrees(agent, Some(1764637200));
    for (json, exp) in [
        (&br#"{"exp":0}"#[..], Some(0)),
        (br#"{"exp":9999999999999999999}"#, Some(9999999999999999999)),
        (br#"{"exp":18446744073709551615}"#, Some(u64::MAX)),
        (br#"{"iat":123456789012345678901234,"exp":7}"#, Some(7)),
        (br#"{"exp":01}"#, None),
        (br#"{"iat":01,"exp":7}"#, None),
        (br#"{"exp":7,"exp":7}"#, None),
        (br#"{"exp":"7"}"#, None),
        (br#"{"exp":7,}"#, None),
        (br#"{"exp":7}x"#, None),
        (br#"{"exp":7.5}"#, Some(7)),
        (br#"{"exp":-7}"#, None),
        (br#"{"jti":"a","exp":7}"#, Some(7)),
        (br#"{"jti":"a"}"#, None),
    ] {
        agrees(json, exp);
    }
    // Outside the form, serde_json decides.
    for (other, exp) in [
        (&br#"{"exp": 7}"#[..], 7),
        (br#"{"e\u0078p":7}"#, 7),
        (br#"{"exp":7,"x":"\t"}"#, 7),
        (br#"{"exp":18446744073709551615}"#, u64::MAX),
        ("{\"exp\":7,\"x\":\"é\"}".as_bytes(), 7),
    ] {
        assert_eq!(plain_exp(other), None, "{}", String::from_utf8_lossy(other));
        agrees(other, Some(exp));
    }
}
