//! Claims in the form agents write them, read without the general reader: one flat object of
//! printable ASCII with no white space and no escape, whose values are strings, plain
//! integers and the literals, `exp` once among them (`{"iat":…,"exp":…,"jti":"…"}`).
//!
//! What is read here is read exactly as [`super::exp_claim`]'s general reader reads it, which
//! is serde_json's reading: this form is a small part of JSON whose reading is plain. Anything
//! outside it, even valid JSON, is left to the general reader, which decides.

use super::PLAIN_DIGITS;

/// The `exp` of claims in the plain form, or `None` when they are not in it.
pub(super) fn exp_claim(json: &[u8]) -> Option<Option<u64>> {
    // No control character, no escape, no multi-byte UTF-8: every string is its bytes between
    // two quotes, and the text is valid UTF-8.
    if !printable_unescaped(json) {
        return None;
    }
    let mut reader = Reader { json, at: 0 };
    reader.expect(b'{')?;
    if reader.eat(b'}') {
        return reader.at_end().then_some(None);
    }
    let mut exp = None;
    loop {
        let is_exp = reader.string()? == b"exp";
        reader.expect(b':')?;
        match reader.peek()? {
            b'"' => {
                reader.string()?;
                // An `exp` that is a string: the general reader says what that is.
                if is_exp {
                    return None;
                }
            }
            b'-' | b'0'..=b'9' => {
                let value = reader.integer()?;
                if is_exp {
                    // Named twice, or negative: the general reader's to judge.
                    if exp.is_some() {
                        return None;
                    }
                    exp = Some(value?);
                }
            }
            b't' => reader.literal(b"true")?,
            b'f' => reader.literal(b"false")?,
            b'n' => reader.literal(b"null")?,
            _ => return None,
        }
        match reader.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    reader.at_end().then_some(exp)
}

struct Reader<'a> {
    json: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, b: u8) -> bool {
        let here = self.peek() == Some(b);
        self.at += usize::from(here);
        here
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    fn at_end(&self) -> bool {
        self.at == self.json.len()
    }

    /// A string's inside: with no backslash, the next quote closes it.
    fn string(&mut self) -> Option<&[u8]> {
        self.expect(b'"')?;
        let rest = self.json.get(self.at..)?;
        let len = find_quote(rest)?;
        self.at += len + 1;
        Some(&rest[..len])
    }

    /// An integer followed by the end of its value (`,` or `}`): `Some(Some(n))` for a
    /// non-negative one, `Some(None)` for a negative one; `None` for anything else (a
    /// fraction, an exponent, a leading zero, too many digits).
    fn integer(&mut self) -> Option<Option<u64>> {
        let negative = self.eat(b'-');
        let digits = self.json.get(self.at..)?;
        let mut value: u64 = 0;
        let mut len = 0;
        while let Some(&d) = digits.get(len)
            && d.is_ascii_digit()
        {
            value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            len += 1;
        }
        if !(1..=PLAIN_DIGITS).contains(&len) || (len > 1 && digits[0] == b'0') {
            return None;
        }
        if !matches!(digits.get(len), Some(b',' | b'}')) {
            return None;
        }
        self.at += len;
        Some((!negative).then_some(value))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let here = self.json.get(self.at..self.at + word.len())?;
        self.at += word.len();
        (here == word).then_some(())
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
