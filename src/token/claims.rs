//! The `exp` claim of a JWT's claims, read in one pass over the JSON, without building a value.
//!
//! The claims are checked whole, strictly, as serde_json reads them into a `Value`: an object
//! of valid UTF-8 and nothing after it but white space; strings with their escapes (surrogates
//! paired), numbers in JSON's grammar and in `f64`'s range, the literals, containers no deeper
//! than serde_json's recursion limit. Anything else, or `exp` named twice (a derived struct
//! refuses a duplicate field), and there is no `exp`. `fuzz/fuzz_targets/token.rs` holds this
//! to serde_json's `Value` on every input it finds.
//!
//! A refresh is read on the call's path, so this costs what a scan of the bytes costs: no
//! allocation, no recursion, and serde_json only for a number that is not a plain integer (so
//! that a float is rounded, and found out of range, exactly as serde_json does it).

use serde_json::Number;

/// How many containers may be open at once, the claims object included: serde_json's
/// recursion limit (128 levels, the last of which it refuses).
const MAX_DEPTH: u32 = 127;

/// The most digits of an integer read without serde_json: any 19 digits fit in a `u64`, and
/// serde_json reads them all as one (or, negative, as an `i64` or a finite `f64`).
const PLAIN_DIGITS: usize = 19;

/// The `exp` member of the JSON object `json`, as a number of seconds: an integer, or the whole
/// part of a non-negative number. `None` when `json` is not a valid object, names `exp` twice,
/// or its `exp` is no such number.
pub(super) fn exp_claim(json: &[u8]) -> Option<u64> {
    // Claims as agents write them take a shorter way, to the same answer.
    plain::exp_claim(json).unwrap_or_else(|| exp_claim_of_any(json))
}

/// [`exp_claim`] of any JSON text, by the general reader.
fn exp_claim_of_any(json: &[u8]) -> Option<u64> {
    // UTF-8 once for the whole text: the grammar is all that is left to check.
    std::str::from_utf8(json).ok()?;
    let mut reader = Reader { json, at: 0 };
    reader.white_space();
    reader.expect(b'{')?;
    reader.white_space();
    let mut exp = None;
    if !reader.eat(b'}') {
        loop {
            reader.white_space();
            let is_exp = reader.key()?;
            reader.white_space();
            if is_exp {
                if exp.is_some() {
                    return None;
                }
                exp = Some(reader.exp_value()?);
            } else {
                reader.value()?;
            }
            reader.white_space();
            match reader.next()? {
                b',' => {}
                b'}' => break,
                _ => return None,
            }
        }
    }
    reader.white_space();
    if reader.at != json.len() {
        return None;
    }
    exp.flatten()
}

/// A number as read: a plain integer of at most [`PLAIN_DIGITS`] digits, or any other
/// number, as serde_json reads it.
enum Read {
    Plain { negative: bool, value: u64 },
    Other(Number),
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
        if here {
            self.at += 1;
        }
        here
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// JSON's white space, which is serde_json's: space, tab, line feed, carriage return.
    fn white_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A member's name and its `:`; whether the name is `exp` (escapes undone).
    fn key(&mut self) -> Option<bool> {
        let (start, escaped) = self.string()?;
        let raw = &self.json[start..self.at - 1];
        let is_exp = if escaped {
            unescaped_is(raw, b"exp")
        } else {
            raw == b"exp"
        };
        self.white_space();
        self.expect(b':')?;
        Some(is_exp)
    }

    /// A string, from its opening quote to past its closing one: where its inside starts, and
    /// whether it has escapes.
    fn string(&mut self) -> Option<(usize, bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            self.skip_text();
            match self.next()? {
                b'"' => return Some((start, escaped)),
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                // Control characters must be escaped; anything else is text (UTF-8 is checked).
                0..0x20 => return None,
                _ => {}
            }
        }
    }

    /// Past the bytes of a string that are only text (no quote, backslash or control
    /// character), eight at a time, as serde_json does: a jti is 32 of them.
    fn skip_text(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
        let (words, _) = self.json[self.at..].as_chunks::<8>();
        for word in words {
            let w = u64::from_le_bytes(*word);
            let zero_at = |x: u64| x.wrapping_sub(ONES) & !x;
            let quote = zero_at(w ^ u64::from_ne_bytes([b'"'; 8]));
            let backslash = zero_at(w ^ u64::from_ne_bytes([b'\\'; 8]));
            let control = w.wrapping_sub(u64::from_ne_bytes([0x20; 8])) & !w;
            // The lowest high bit set marks the first byte to stop at.
            let stop = (quote | backslash | control) & HIGHS;
            if stop != 0 {
                self.at += stop.trailing_zeros() as usize / 8;
                return;
            }
            self.at += 8;
        }
    }

    /// What follows a backslash, as serde_json checks it for a `String`: one of the short
    /// escapes, or `\uXXXX`, a high surrogate only with a low one after it.
    fn escape(&mut self) -> Option<()> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => match self.hex4()? {
                0xDC00..=0xDFFF => None,
                0xD800..=0xDBFF => {
                    self.expect(b'\\')?;
                    self.expect(b'u')?;
                    matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(())
                }
                _ => Some(()),
            },
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.json.get(self.at..self.at + 4)?;
        self.at += 4;
        hex4(digits)
    }

    /// A number: the longest run of the bytes a number is written with, which must be one
    /// number (whatever follows it is the container's to check).
    fn number(&mut self) -> Option<Read> {
        let start = self.at;
        let negative = self.eat(b'-');
        let digits_start = self.at;
        let mut value: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            self.at += 1;
        }
        let digits = self.at - digits_start;
        let ends = !matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'+' | b'-'));
        let leading_zero = digits > 1 && self.json[digits_start] == b'0';
        if ends && (1..=PLAIN_DIGITS).contains(&digits) && !leading_zero {
            return Some(Read::Plain { negative, value });
        }
        // A fraction, an exponent, a long integer, or no number at all: serde_json decides,
        // so that it is refused, or rounded, exactly as serde_json does.
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.at += 1;
        }
        serde_json::from_slice(&self.json[start..self.at])
            .ok()
            .map(Read::Other)
    }

    /// The value of `exp`, checked like any other: its seconds, if it is a usable number.
    fn exp_value(&mut self) -> Option<Option<u64>> {
        if !matches!(self.peek()?, b'-' | b'0'..=b'9') {
            self.value()?;
            return Some(None);
        }
        Some(match self.number()? {
            Read::Plain {
                negative: false,
                value,
            } => Some(value),
            // `-0` is serde_json's `-0.0`, whose whole part is 0; other negatives are unusable.
            Read::Plain {
                negative: true,
                value,
            } => (value == 0).then_some(0),
            // NumericDate may carry a fraction; a negative or absurd value means "no usable
            // claim".
            Read::Other(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            }),
        })
    }

    /// One value of any kind, checked and skipped, with everything inside it. Containers are
    /// tracked in a bit stack (set for an object), not by recursion.
    fn value(&mut self) -> Option<()> {
        // Below the claims object, which is open.
        let mut open = 0;
        let mut objects: u128 = 0;
        loop {
            // At the start of a value.
            match self.peek()? {
                open_with @ (b'{' | b'[') => {
                    if 1 + open + 1 > MAX_DEPTH {
                        return None;
                    }
                    self.at += 1;
                    let object = open_with == b'{';
                    open += 1;
                    objects = objects << 1 | u128::from(object);
                    self.white_space();
                    if !self.eat(if object { b'}' } else { b']' }) {
                        if object {
                            self.key()?;
                        }
                        self.white_space();
                        continue;
                    }
                    open -= 1;
                    objects >>= 1;
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                }
                _ => return None,
            }
            // After a value: the next one in its container, or the container's end.
            loop {
                if open == 0 {
                    return Some(());
                }
                self.white_space();
                let object = objects & 1 == 1;
                match self.next()? {
                    b',' => {
                        self.white_space();
                        if object {
                            self.key()?;
                            self.white_space();
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                open -= 1;
                objects >>= 1;
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let here = self.json.get(self.at..self.at + word.len())?;
        self.at += word.len();
        (here == word).then_some(())
    }
}

/// Four hexadecimal digits, either case.
fn hex4(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0, |n: u16, &d| {
        let digit = char::from(d).to_digit(16)?;
        Some(n << 4 | digit as u16)
    })
}

/// Whether the inside of a string, `raw`, whose escapes were checked, is `text` once they are
/// undone. `text` is ASCII, so an escape of anything else never matches.
fn unescaped_is(raw: &[u8], text: &[u8]) -> bool {
    let mut want = text.iter();
    let mut at = 0;
    while let Some(&b) = raw.get(at) {
        let c = if b == b'\\' {
            let (c, len) = match raw.get(at + 1) {
                Some(b'u') => (raw.get(at + 2..at + 6).and_then(hex4), 6),
                Some(&short) => (short_escape(short).map(u16::from), 2),
                None => (None, 1),
            };
            at += len;
            c
        } else {
            at += 1;
            Some(u16::from(b))
        };
        match (c, want.next()) {
            (Some(c), Some(&w)) if c == u16::from(w) => {}
            _ => return false,
        }
    }
    want.next().is_none()
}

/// The byte a short escape (`\n`, say) stands for.
fn short_escape(b: u8) -> Option<u8> {
    Some(match b {
        b'"' | b'\\' | b'/' => b,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

mod plain;

#[cfg(test)]
mod tests;
