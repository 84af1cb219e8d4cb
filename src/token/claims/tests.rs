use super::*;

use proptest::prelude::*;

/// What the fuzz target holds `exp_claim` to: serde_json's `Value` of an object of valid
/// UTF-8, its members in order, `exp` at most once.
fn reference(json: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(json).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.as_object()?;
    // `Value`'s map keeps the last of duplicate names: count them in a reading that keeps all.
    struct Names(usize);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Count;
            impl<'de> serde::de::Visitor<'de> for Count {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Names, A::Error> {
                    let mut exps = 0;
                    while let Some((k, _)) = map.next_entry::<String, serde_json::Value>()? {
                        exps += usize::from(k == "exp");
                    }
                    Ok(Names(exps))
                }
            }
            d.deserialize_map(Count)
        }
    }
    let Names(exps) = serde_json::from_str(text).ok()?;
    if exps > 1 {
        return None;
    }
    let n = value.get("exp")?.as_number()?.clone();
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[track_caller]
fn agrees(json: &[u8], exp: Option<u64>) {
    let shown = String::from_utf8_lossy(json);
    assert_eq!(reference(json), exp, "serde_json on {shown:?}");
    assert_eq!(exp_claim(json), exp, "{shown:?}");
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

/// Numbers: a plain integer is read here, anything else as serde_json reads it, so that a
/// fraction rounds and an out-of-range number fails the whole object exactly as there.
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
    // Out of range anywhere, and serde_json refuses the whole object.
    agrees(br#"{"exp":1,"x":1e400}"#, None);
    agrees(br#"{"exp":1,"x":[1,2e309]}"#, None);
    agrees(
        &[br#"{"exp":1,"x":1"#, &[b'0'; 400][..], b"}"].concat(),
        None,
    );
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
    agrees(br#"{"a":{"exp":1,"exp":2},"exp":3}"#, Some(3));
}

/// Strings as serde_json checks a `String`: escapes, paired surrogates, no raw control
/// character.
#[test]
fn strings_are_checked_whole() {
    agrees(
        br#"{"exp":1,"x":"a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00"}"#,
        Some(1),
    );
    agrees("{\"exp\":1,\"x\":\"é😀\u{7f}\"}".as_bytes(), Some(1));
    for bad in [
        &br#"{"exp":1,"x":"\uD83D"}"#[..],
        br#"{"exp":1,"x":"\uDE00"}"#,
        br#"{"exp":1,"x":"\uD83D\n"}"#,
        br#"{"exp":1,"x":"\uD83D\uD83D"}"#,
        br#"{"exp":1,"x":"\u12"}"#,
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

/// serde_json's recursion limit: 127 containers open at once, the claims object one of them.
#[test]
fn depth_is_serde_json_s() {
    let nested = |arrays: usize| {
        let mut json = br#"{"exp":1,"x":"#.to_vec();
        json.extend(std::iter::repeat_n(b'[', arrays));
        json.extend(std::iter::repeat_n(b']', arrays));
        json.push(b'}');
        json
    };
    agrees(&nested(126), Some(1));
    agrees(&nested(127), None);
    agrees(&nested(100_000), None);
    let objects = |n: usize| {
        let mut json = b"{".to_vec();
        for _ in 0..n {
            json.extend_from_slice(br#""a":{"#);
        }
        json.extend_from_slice(br#""exp":1"#);
        json.extend(std::iter::repeat_n(b'}', n + 1));
        json
    };
    agrees(&objects(0), Some(1));
    agrees(
        &[&objects(125)[..1], br#""exp":2,"#, &objects(125)[1..]].concat(),
        Some(2),
    );
    agrees(
        &[&objects(126)[..1], br#""exp":2,"#, &objects(126)[1..]].concat(),
        Some(2),
    );
    agrees(
        &[&objects(127)[..1], br#""exp":2,"#, &objects(127)[1..]].concat(),
        None,
    );
    let mut exp_deep = br#"{"exp":"#.to_vec();
    exp_deep.extend(std::iter::repeat_n(b'[', 127));
    exp_deep.extend(std::iter::repeat_n(b']', 127));
    exp_deep.push(b'}');
    agrees(&exp_deep, None);
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

/// Text near the form agents write claims in (flat, no white space, no escape), so that the
/// shorter way is taken often, and left often.
fn nearly_plain() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        &br#""exp":"#[..],
        br#""iat":"#,
        br#""jti":"#,
        br#""e\u0078p":"#,
        br#""0af3""#,
        br#""""#,
        b"1764637200",
        b"0",
        b"-0",
        b"-7",
        b"01",
        b"1.5",
        b"1e3",
        b"9999999999999999999",
        b"18446744073709551616",
        b"true",
        b"false",
        b"null",
        b"nul",
        b"[]",
        b"{}",
        b",",
        b",",
        b"}",
        b" ",
        b"\x7f",
    ]);
    prop::collection::vec(pieces, 0..12).prop_map(|pieces| {
        let mut json = b"{".to_vec();
        pieces.into_iter().for_each(|p| json.extend_from_slice(p));
        json
    })
}

/// The claims an agent writes go the shorter way, and reach the answer the general reader
/// does (if the shorter way were never taken, `plain_agrees_with_the_general_reader` could
/// pass without testing it).
#[test]
fn agent_claims_take_the_plain_way() {
    for json in [
        &br#"{"iat":1764633600,"exp":1764637200,"jti":"0af3"}"#[..],
        br#"{"exp":0}"#,
        br#"{}"#,
        br#"{"sub":"node","admin":true,"x":null,"n":-3,"exp":42}"#,
    ] {
        let plain = plain::exp_claim(json);
        assert!(plain.is_some(), "{}", String::from_utf8_lossy(json));
        assert_eq!(plain, Some(exp_claim_of_any(json)));
    }
    for json in [
        &br#"{"exp": 1}"#[..],
        br#"{"exp":1.0}"#,
        br#"{"e\u0078p":1}"#,
    ] {
        assert_eq!(
            plain::exp_claim(json),
            None,
            "{}",
            String::from_utf8_lossy(json)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn plain_agrees_with_the_general_reader(json in nearly_plain()) {
        if let Some(exp) = plain::exp_claim(&json) {
            prop_assert_eq!(exp, exp_claim_of_any(&json), "{:?}", String::from_utf8_lossy(&json));
        }
        prop_assert_eq!(exp_claim(&json), reference(&json), "{:?}", String::from_utf8_lossy(&json));
    }

    #[test]
    fn agrees_with_serde_json(json in jsonish()) {
        prop_assert_eq!(exp_claim(&json), reference(&json), "{:?}", String::from_utf8_lossy(&json));
    }
}
