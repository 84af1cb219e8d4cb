//! A token's `exp`, read as a JWT's: three parts, the second of them claims in base64url.
//!
//! A refresh is read on the call's path, so the form agents mint, three parts of base64url
//! between two dots, is read in vectors: `memchr` finds the dots, `base64-simd` checks the
//! outer parts' alphabet and decodes the claims (which checks theirs), where a byte-by-byte
//! check of the `b64token` alphabet costs a refresh about 500 instructions. Any other token is
//! checked byte by byte and read as before.

/// Claims up to this size are decoded on the stack: an agent's are under 100 bytes.
const CLAIMS_ON_STACK: usize = 256;

/// How `base64-simd` checks a text: 32 bytes at a time in vectors while at least 38 are left,
/// the last 6 to 37 one by one, at about ten instructions a byte. A part is checked filled up
/// with `A` (no bits) to a length that leaves 6: [`in_alphabet`].
const BLOCK: usize = 32;
const LEFT: usize = 6;
/// The buffer a piece of a part is filled up in: pieces of `PIECE - LEFT` (96) bytes at most,
/// so that an agent's header and signature (under 64 bytes) are one piece each.
const PIECE: usize = 3 * BLOCK + LEFT;

/// The `exp` of `token` if it is a JWT in the plain form: three parts of base64url without
/// padding (`A-Z a-z 0-9 - _`) between two dots, the claims canonical base64url. Such a token is
/// a `b64token`, so nothing else need be checked. `None` when it is not in that form.
pub(super) fn exp_of_plain_jwt(token: &[u8]) -> Option<Option<u64>> {
    let first = memchr::memchr(b'.', token)?;
    let start = first + 1;
    let end = start + memchr::memchr(b'.', &token[start..])?;
    // The signature, in the alphabet, holds no third dot.
    if !in_alphabet(&token[..first]) || !in_alphabet(&token[end + 1..]) {
        return None;
    }
    // Decoding checks the claims' alphabet, and more: stray bits, a length no encoding has.
    exp_of_claims(&token[start..end])
}

/// The `exp` of a `b64token` that is not a JWT in the plain form, if it is a JWT at all: three
/// parts, the claims canonical base64url. (A `b64token` has `=` only at its end, so its claims
/// have none.)
pub(super) fn exp_of_any(token: &[u8]) -> Option<u64> {
    let first = memchr::memchr(b'.', token)?;
    let after = &token[first + 1..];
    let second = memchr::memchr(b'.', after)?;
    if memchr::memchr(b'.', &after[second + 1..]).is_some() {
        return None;
    }
    exp_of_claims(&after[..second]).flatten()
}

/// Whether every byte of `part` is base64url's (`A-Z a-z 0-9 - _`). `base64-simd`'s check
/// also judges the length and the bits of a last character, which a part filled up with `A`
/// (no bits) to a whole number of characters does not have; it is checked in pieces of 96
/// bytes at most, each filled up (in a buffer of [`PIECE`]) to a length the check runs through
/// in vectors but for 6 bytes.
fn in_alphabet(part: &[u8]) -> bool {
    let engine = base64_simd::URL_SAFE_NO_PAD;
    part.chunks(PIECE - LEFT).all(|piece| {
        let mut filled = [b'A'; PIECE];
        filled[..piece.len()].copy_from_slice(piece);
        let blocks = piece.len().div_ceil(BLOCK);
        engine.check(&filled[..blocks * BLOCK + LEFT]).is_ok()
    })
}

/// The `exp` of the claims `encoded` in base64url without padding, read strictly
/// ([`claims::exp_claim`](super::claims::exp_claim)); `None` when they are not canonical
/// base64url. `base64-simd`: a third of the `base64` crate's instructions for an agent's
/// claims, and as strict (no padding, no stray bits).
fn exp_of_claims(encoded: &[u8]) -> Option<Option<u64>> {
    let engine = base64_simd::URL_SAFE_NO_PAD;
    if engine.decoded_length(encoded).ok()? <= CLAIMS_ON_STACK {
        let mut on_stack = [0; CLAIMS_ON_STACK];
        let claims = engine
            .decode(encoded, base64_simd::Out::from_slice(&mut on_stack))
            .ok()?;
        Some(super::claims::exp_claim(claims))
    } else {
        Some(super::claims::exp_claim(
            &engine.decode_to_vec(encoded).ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl", b64.encode(claims))
    }

    #[test]
    fn the_plain_form_is_three_parts_of_base64url() {
        let e30 = Some(None); // `{}`: a JWT, with no `exp`
        assert_eq!(exp_of_plain_jwt(b"eyJh.e30.c2ln"), e30);
        assert_eq!(exp_of_plain_jwt(b"a-_b.e30."), e30);
        assert_eq!(exp_of_plain_jwt(b".e30.c2ln"), e30);
        for other in [
            &b"eyJh.e30"[..],
            b"eyJh.e30.c2ln.x",
            b"eyJh.e30.c2ln=",
            b"ey+h.e30.c2ln",
            b"eyJh.e30.c2~n",
            b"eyJh.e3/.c2ln",
            b"eyJh.e31.c2ln", // stray bits in the claims
            b"eyJh.e.c2ln",   // no encoding is one character long
            b"nodots",
        ] {
            assert_eq!(
                exp_of_plain_jwt(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    /// The alphabet is checked at every place of parts of every length around a block.
    #[test]
    fn in_alphabet_is_base64url_at_every_place() {
        for len in [0, 1, 2, 31, 32, 33, 63, 64, 65, 96, 97, 100, 200] {
            assert!(in_alphabet(&vec![b'_'; len]));
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut part = vec![b'Q'; len];
                    part[at] = b;
                    let ok = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
                    assert_eq!(in_alphabet(&part), ok, "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    /// Whatever the form, a token's `exp` is what the general reading finds.
    #[test]
    fn both_readings_agree() {
        for claims in [
            r#"{"iat":1,"exp":1764637200,"jti":"0af3"}"#,
            r#"{"exp":7}"#,
            r#"{"exp": 7.5}"#,
            r#"{}"#,
            r#"[7]"#,
            "",
        ] {
            let token = jwt(claims);
            let plain = exp_of_plain_jwt(token.as_bytes()).expect("the plain form");
            assert_eq!(plain, exp_of_any(token.as_bytes()), "{claims}");
        }
        assert_eq!(
            exp_of_plain_jwt(jwt(r#"{"exp":7}"#).as_bytes()),
            Some(Some(7))
        );
    }
}
