//! A token's `exp`, read as a JWT's: three parts, the second of them claims in base64url, read
//! by serde_json into a derived struct.

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
    let mut dots = memchr::memchr_iter(b'.', token);
    let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
        return None;
    };
    let outer = [&token[..first], &token[second + 1..]];
    // Strict: no padding, no stray bits in the last character.
    let (engine, encoded) = (base64_simd::URL_SAFE_NO_PAD, &token[first + 1..second]);
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
