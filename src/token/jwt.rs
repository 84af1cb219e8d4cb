//! A token's `exp`, read as a JWT's: three parts, the second of them claims in base64url.
//!
//! A refresh is read on the call's path, so the form agents mint, three parts of base64url
//! between two dots, is recognised without looking at a byte twice: `base64-simd` checks the
//! parts (in vectors, where a byte-by-byte check of the `b64token` alphabet costs a refresh
//! about 500 instructions) and decodes the claims. Any other token is checked byte by byte and
//! read as before.

use std::ops::Range;

/// Claims up to this size are decoded on the stack: an agent's are under 100 bytes.
const CLAIMS_ON_STACK: usize = 256;

/// Where the claims of `token` are, when it is a JWT in the plain form: three parts of
/// base64url without padding (`A-Z a-z 0-9 - _`) between two dots. Such a token is also a
/// `b64token`, so nothing else need be checked.
pub(super) fn plain_jwt_claims(token: &[u8]) -> Option<Range<usize>> {
    let first = memchr::memchr(b'.', token)?;
    let start = first + 1;
    let end = start + memchr::memchr(b'.', &token[start..])?;
    let engine = base64_simd::URL_SAFE_NO_PAD;
    // The signature, checked as base64url, has no third dot.
    let parts = [&token[..first], &token[start..end], &token[end + 1..]];
    parts
        .iter()
        .all(|part| engine.check(part).is_ok())
        .then_some(start..end)
}

/// The `exp` of a token that is not a JWT in the plain form, if it is a JWT at all: three
/// parts of any `b64token` bytes, the claims base64url with or without padding.
pub(super) fn exp_of_any(token: &[u8]) -> Option<u64> {
    let first = memchr::memchr(b'.', token)?;
    let after = &token[first + 1..];
    let second = memchr::memchr(b'.', after)?;
    if memchr::memchr(b'.', &after[second + 1..]).is_some() {
        return None;
    }
    let mut claims = &after[..second];
    while let [rest @ .., b'='] = claims {
        claims = rest;
    }
    exp_of_claims(claims)
}

/// The `exp` of claims in base64url without padding, read strictly
/// ([`claims::exp_claim`](super::claims::exp_claim)).
pub(super) fn exp_of_claims(encoded: &[u8]) -> Option<u64> {
    // base64-simd: a third of the `base64` crate's instructions for an agent's claims, and as
    // strict (no padding, no stray bits).
    let engine = base64_simd::URL_SAFE_NO_PAD;
    if engine.decoded_length(encoded).ok()? <= CLAIMS_ON_STACK {
        let mut on_stack = [0; CLAIMS_ON_STACK];
        let claims = engine
            .decode(encoded, base64_simd::Out::from_slice(&mut on_stack))
            .ok()?;
        super::claims::exp_claim(claims)
    } else {
        super::claims::exp_claim(&engine.decode_to_vec(encoded).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_form_is_three_parts_of_base64url() {
        assert_eq!(plain_jwt_claims(b"eyJh.e30.c2ln"), Some(5..8));
        assert_eq!(plain_jwt_claims(b"a-_b.e30."), Some(5..8));
        for other in [
            &b"eyJh.e30"[..],
            b"eyJh.e30.c2ln.x",
            b"eyJh.e30.c2ln=",
            b"ey+h.e30.c2ln",
            b"eyJh.e30.c2~n",
            b"eyJh.e3/.c2ln",
            b"e.e30.c2ln",
            b"nodots",
        ] {
            assert_eq!(
                plain_jwt_claims(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    /// Whatever the form, a token's `exp` is what the general reading finds.
    #[test]
    fn both_readings_agree() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = b64.encode(r#"{"iat":1,"exp":1764637200,"jti":"0af3"}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2lnbmF0dXJl");
        let range = plain_jwt_claims(token.as_bytes()).expect("the plain form");
        let fast = exp_of_claims(&token.as_bytes()[range]);
        assert_eq!(fast, Some(1_764_637_200));
        assert_eq!(exp_of_any(token.as_bytes()), fast);
    }
}
