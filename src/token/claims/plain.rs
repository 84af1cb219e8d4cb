//! Claims in the form agents write them, read without the general reader: one flat object of
//! printable ASCII with no escape and no white space between its tokens (a space inside a
//! string is text), whose values are strings, plain integers and the literals, `exp` once
//! among them (`{"iat":…,"exp":…,"jti":"…"}`).
//!
//! What is read here is read exactly as [`super::exp_claim`]'s general reader reads it, which
//! is serde_json's reading: this form is a small part of JSON whose reading is plain. Anything
//! outside it, even valid JSON, is left to the general reader, which decides.

use super::PLAIN_DIGITS;

/// The `exp` of claims in the plain form, or `None` when they are not in it.
// Inlined into its one caller whichever codegen unit each lands in: a call between them costs
// a refresh about 35 instructions, and which unit a function lands in moves when an unrelated
// module is added.
#[inline]
pub(super) fn exp_claim(json: &[u8]) -> Option<Option<u64>> {
    // No control character, no escape, no multi-byte UTF-8: every string is its bytes between
    // two quotes, and the text is valid UTF-8.
    if !printable_unescaped(json) {
        return None;
    }
    let [b'{', members @ .., b'}'] = json else {
        return None;
    };
    let mut members: &[u8] = members;
    let mut exp = None;
    while !members.is_empty() {
        let [b'"', rest @ ..] = members else {
            return None;
        };
        let (name, rest) = rest.split_at(find_quote(rest)?);
        let [b'"', b':', rest @ ..] = rest else {
            return None;
        };
        let (value, rest) = value(rest)?;
        if name == b"exp" {
            match value {
                Value::Integer(Some(seconds)) if exp.is_none() => exp = Some(seconds),
                // Named twice, negative, or not a number: the general reader's to judge.
                _ => return None,
            }
        }
        members = match rest {
            [] => rest,
            [b',', next @ ..] if !next.is_empty() => next,
            _ => return None,
        };
    }
    Some(exp)
}

/// A member's value in the plain form.
enum Value {
    /// An integer: its value if it is not negative.
    Integer(Option<u64>),
    /// A string or a literal.
    Other,
}

/// The value `bytes` start with, and what follows it; `None` for anything outside the plain
/// form (a fraction, an exponent, a leading zero, too many digits, a container).
fn value(bytes: &[u8]) -> Option<(Value, &[u8])> {
    let literal = |word: &[u8]| bytes.strip_prefix(word).map(|rest| (Value::Other, rest));
    match bytes.first()? {
        b'"' => {
            let len = find_quote(&bytes[1..])?;
            Some((Value::Other, &bytes[len + 2..]))
        }
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        _ => {
            let (negative, digits) = match bytes {
                [b'-', digits @ ..] => (true, digits),
                digits => (false, digits),
            };
            // One pass: the digits, counted up to one too many, and their value.
            let mut seconds: u64 = 0;
            let mut len = 0;
            for &d in digits.iter().take(PLAIN_DIGITS + 1) {
                let digit = d.wrapping_sub(b'0');
                if digit > 9 {
                    break;
                }
                seconds = seconds.wrapping_mul(10).wrapping_add(u64::from(digit));
                len += 1;
            }
            if !(1..=PLAIN_DIGITS).contains(&len) || (len > 1 && digits[0] == b'0') {
                return None;
            }
            Some((
                Value::Integer((!negative).then_some(seconds)),
                &digits[len..],
            ))
        }
    }
}

/// Where the first `"` of `bytes` is, eight bytes at a time: the strings of claims are short
/// (a name of three letters, a `jti` of 32), where a call to `memchr` costs more than the
/// search.
fn find_quote(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    let (words, rest) = bytes.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let x = u64::from_le_bytes(*word) ^ QUOTES;
        // The lowest byte that is zero sets the lowest high bit (the ones above it may be
        // wrong, which the lowest does not mind).
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(i * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let at = words.len() * 8;
    rest.iter().position(|&b| b == b'"').map(|i| at + i)
}

/// Bytes looked at together by [`printable_unescaped`]: a loop over arrays of this size is one
/// over vectors.
const LANES: usize = 32;

/// Whether every byte of `bytes` is printable ASCII other than `\\`: JSON with no control
/// character, no escape and nothing but one-byte UTF-8.
fn printable_unescaped(bytes: &[u8]) -> bool {
    let mut outside = [0u8; LANES];
    let mut look = |chunk: &[u8; LANES]| {
        for i in 0..LANES {
            let b = chunk[i];
            outside[i] |= u8::from(b.wrapping_sub(b' ') > b'~' - b' ' || b == b'\\');
        }
    };
    let (chunks, rest) = bytes.as_chunks::<LANES>();
    for chunk in chunks {
        look(chunk);
    }
    // The tail, filled up with a space, which is printable.
    let mut tail = [b' '; LANES];
    tail[..rest.len()].copy_from_slice(rest);
    look(&tail);
    outside.iter().fold(0, |any, &o| any | o) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn find_quote_finds_the_first() {
        for len in 0..40 {
            for at in 0..len {
                let mut text = vec![b'x'; len];
                text[at] = b'"';
                if at + 3 < len {
                    text[at + 3] = b'"';
                }
                assert_eq!(super::find_quote(&text), Some(at), "{at} of {len}");
            }
            assert_eq!(super::find_quote(&vec![0x22 ^ 0x80; len]), None);
            assert_eq!(super::find_quote(&vec![b'x'; len]), None);
        }
    }

    #[test]
    fn printable_unescaped_is_every_byte_from_space_to_tilde_but_backslash() {
        for len in [1, 31, 32, 33, 70] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'x'; len];
                    text[at] = b;
                    let printable = (b' '..=b'~').contains(&b) && b != b'\\';
                    assert_eq!(
                        super::printable_unescaped(&text),
                        printable,
                        "{b:#x} at {at}"
                    );
                }
            }
        }
    }
}
