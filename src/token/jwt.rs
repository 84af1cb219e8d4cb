//! A token's `exp`, read as a JWT's: three parts, the second of them claims in base64url, read
//! by a short reader of their own when they are in the form agents mint ([`plain_exp`]), by
//! serde_json into a derived struct otherwise.

use base64_simd::Out;
use serde_json::Number;

/// Claims up to this size are decoded on the stack, without an allocation on every refresh:
/// an agent's are under 100 bytes.
const CLAIMS_ON_STACK: usize = 256;

/// `token` read as a JWT: its header and signature, and the `exp` of its claims
/// ([`exp_claim`]). `None` when it is not three parts whose second is canonical base64url
/// without padding (a `b64token` has `=` only at its end, so its claims have none).
#[inline]
pub(super) fn read(token: &[u8]) -> Option<([&[u8]; 2], Option<u64>)> {
    // The first and last dots: a third would be in the claims, which base64url has none of.
    let (first, second) = (memchr::memchr(b'.', token)?, memchr::memrchr(b'.', token)?);
    let encoded = token.get(first + 1..second)?;
    let outer = [&token[..first], &token[second + 1..]];
    // Strict: no padding, no stray bits in the last character.
    let engine = base64_simd::URL_SAFE_NO_PAD;
    let exp = if engine.decoded_length(encoded).ok()? <= CLAIMS_ON_STACK {
        let mut on_stack = [0; CLAIMS_ON_STACK];
        exp_claim(
            engine
                .decode(encoded, Out::from_slice(&mut on_stack))
                .ok()?,
        )
    } else {
        exp_claim(&engine.decode_to_vec(encoded).ok()?)
    };
    Some((outer, exp))
}

/// The `exp` member of the claims `json`, as a number of seconds: an integer, or the whole part
/// of a non-negative number. `None` when `json` is not a JSON object of valid UTF-8
/// ([`json_object`](super::json_object)), names `exp` twice (a derived struct refuses a
/// duplicate field), or its `exp` is no such number.
///
/// The other members are skipped as serde skips a field it does not know: their grammar, their
/// escapes and their strings' control characters are checked, not their numbers' range, their
/// surrogates' pairing or their depth.
fn exp_claim(json: &[u8]) -> Option<u64> {
    plain_exp(json).or_else(|| serde_exp(json))
}

/// [`exp_claim`] of claims in the form agents mint them, at a fraction of serde_json's cost (a
/// refresh taken reads one): printable ASCII without `\` or white space, every member's value
/// a string or an integer (no sign, no leading zero, at most 19 digits: a `u64`), `exp` an
/// integer, once. `None` for anything else, which serde_json decides.
fn plain_exp(json: &[u8]) -> Option<u64> {
    // Without escapes, a string ends at the next quote.
    if !super::every_byte(json, |b| (b.wrapping_sub(b' ') < 95) & (b != b'\\')) {
        return None;
    }
    let (mut rest, mut exp) = (json.strip_prefix(b"{")?, None);
    loop {
        // Names are short: a loop finds their end sooner than `memchr` is called.
        let (name, value) = quoted(rest, |s| s.iter().position(|&b| b == b'"'))?;
        let value = value.strip_prefix(b":")?;
        let is_exp = name == b"exp";
        if is_exp && exp.is_some() {
            return None;
        }
        let after = if value.first() == Some(&b'"') {
            if is_exp {
                return None;
            }
            quoted(value, |s| memchr::memchr(b'"', s))?.1
        } else {
            let (digits, after) =
                value.split_at(value.iter().take_while(|b| b.is_ascii_digit()).count());
            if !matches!(digits, [b'0'] | [b'1'..=b'9', ..]) || (is_exp && digits.len() > 19) {
                return None;
            }
            if is_exp {
                exp = Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')));
            }
            after
        };
        match after {
            [b',', next @ ..] => rest = next,
            [b'}'] => return exp,
            _ => return None,
        }
    }
}

/// The string that opens `json`, read plain ([`plain_exp`]): its inside, and what follows it.
/// `end` finds the closing quote.
fn quoted(json: &[u8], end: impl Fn(&[u8]) -> Option<usize>) -> Option<(&[u8], &[u8])> {
    let inside = json.strip_prefix(b"\"")?;
    let end = end(inside)?;
    Some((&inside[..end], &inside[end + 1..]))
}

/// [`exp_claim`] by serde_json.
fn serde_exp(json: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<Number>,
    }
    let exp = serde_json::from_str::<Claims>(super::json_object(json)?)
        .ok()?
        .exp?;
    // NumericDate may carry a fraction; a negative value means "no usable claim". A `Number`
    // is finite; one past `u64::MAX` saturates, and is no time (`Token::expires_at`).
    exp.as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests;
