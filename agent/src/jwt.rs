//! The agent's tokens: standard HS256 JSON Web Tokens (RFC 7519, signed per RFC 7515 and
//! RFC 7518 §3.2), `base64url(header).base64url(claims).base64url(HMAC-SHA-256)`, without
//! padding, so that any JWT library can check them given the key.
//!
//! The HMAC's key state (the key's inner and outer pads, hashed) is computed once per key and
//! cloned for each token, instead of being rebuilt for every sign and every check.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::Key;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::de::{Deserializer as _, Error as _, MapAccess, Visitor};
use sha2::Sha256;

use super::error::VerifyError;
use super::manager::KEY_LEN;

/// `{"alg":"HS256","typ":"JWT"}`, base64url: the header of every token minted here.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The HMAC-SHA-256 output, in bytes.
const SIGNATURE_LEN: usize = 32;

/// The largest claims JSON minted: `{"iat":…,"exp":…,"jti":"…"}` with two 20-digit numbers and a
/// 32-character id.
const MAX_CLAIMS_JSON: usize = 96;

/// A signing key, ready to sign and check.
pub(super) struct Hs256 {
    /// HMAC-SHA-256 keyed with the secret, before any message: cloned for each token.
    keyed: Hmac<Sha256>,
}

impl Hs256 {
    /// The key state for `secret`.
    pub(super) fn new(secret: &[u8; KEY_LEN]) -> Self {
        // HMAC pads a key shorter than the hash's block with zeros (RFC 2104, section 2), so
        // the secret padded here to a block is the same key, and building from a whole block
        // cannot fail.
        let mut block = Key::<Hmac<Sha256>>::default();
        block[..KEY_LEN].copy_from_slice(secret);
        Self {
            keyed: Hmac::new(&block),
        }
    }

    /// Appends a signed token with these claims to `out`.
    pub(super) fn sign_into(
        &self,
        out: &mut Vec<u8>,
        iat: u64,
        exp: u64,
        jti: &str,
    ) -> Result<(), serde_json::Error> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iat: u64,
            exp: u64,
            jti: &'a str,
        }
        let mut json = [0; MAX_CLAIMS_JSON];
        let mut rest = &mut json[..];
        serde_json::to_writer(&mut rest, &Claims { iat, exp, jti })?;
        let json_len = MAX_CLAIMS_JSON - rest.len();

        let start = out.len();
        out.extend_from_slice(HEADER.as_bytes());
        out.push(b'.');
        append_base64(out, &json[..json_len]);
        let mut mac = self.keyed.clone();
        mac.update(&out[start..]);
        let signature = mac.finalize().into_bytes();
        out.push(b'.');
        append_base64(out, &signature);
        Ok(())
    }

    /// Checks that `token` is an HS256 JWT signed with this key: its claims are then the
    /// agent's (or those of whoever else holds the key).
    ///
    /// In the order a JWT library checks them: three parts, a header saying HS256 (so `none`
    /// and every other algorithm are [`Malformed`](VerifyError::Malformed)), then the
    /// signature, compared in constant time.
    pub(super) fn verify(&self, token: &str) -> Result<(), VerifyError> {
        let (message, signature) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
        let (header, claims) = message.split_once('.').ok_or(VerifyError::Malformed)?;
        if claims.contains('.') || (header != HEADER && !says_hs256(header)) {
            return Err(VerifyError::Malformed);
        }
        // One byte more than a signature, so that a longer one is told apart from ours.
        let mut decoded = [0; SIGNATURE_LEN + 1];
        let len = match URL_SAFE_NO_PAD.decode_slice(signature, &mut decoded) {
            Ok(len) => len,
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                return Err(VerifyError::InvalidSignature);
            }
            Err(base64::DecodeSliceError::DecodeError(_)) => return Err(VerifyError::Malformed),
        };
        let mut mac = self.keyed.clone();
        mac.update(message.as_bytes());
        mac.verify_slice(&decoded[..len])
            .map_err(|_| VerifyError::InvalidSignature)
    }
}

/// Whether a header other than ours still names HS256 (its fields in another order, or with a
/// `kid`, as another JWT library may write it). The header must be a JSON object (RFC 7515,
/// section 4) that names each member once, every member read whole as serde_json's `Value`
/// reads it: valid UTF-8, every string's escapes paired, every number in range. A derived
/// struct would take an array for it, and skip the fields it does not read without checking
/// them; a `Value` would keep the last of two `alg`s, where another reader may keep the first.
fn says_hs256(header: &str) -> bool {
    let Ok(json) = URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let mut reader = serde_json::Deserializer::from_slice(&json);
    let alg = reader
        .deserialize_map(UniqueMembers)
        .and_then(|alg| reader.end().map(|()| alg));
    matches!(alg, Ok(Some(serde_json::Value::String(alg))) if alg == "HS256")
}

/// Reads a JSON object whose members are all named differently, to its `alg`.
struct UniqueMembers;

impl<'de> Visitor<'de> for UniqueMembers {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object naming each member once")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut names, mut alg) = (HashSet::new(), None);
        while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
            let is_alg = name == "alg";
            if !names.insert(name) {
                return Err(A::Error::custom("a member named twice"));
            }
            if is_alg {
                alg = Some(value);
            }
        }
        Ok(alg)
    }
}

/// A token with the agent's header and `claims` as they are, signed with `key`: claims the
/// agent never mints, for its tests.
#[cfg(test)]
pub(super) fn sign_claims(key: &Hs256, claims: &[u8]) -> String {
    let mut out = HEADER.as_bytes().to_vec();
    out.push(b'.');
    append_base64(&mut out, claims);
    let mut mac = key.keyed.clone();
    mac.update(&out);
    out.push(b'.');
    append_base64(&mut out, &mac.finalize().into_bytes());
    String::from_utf8(out).expect("base64url is ASCII")
}

fn append_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    // Four characters for every three bytes, without padding: cannot overflow for our sizes.
    let len = bytes.len().div_ceil(3) * 4;
    out.resize(start + len, 0);
    let written = URL_SAFE_NO_PAD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_the_standard_one() {
        let json = URL_SAFE_NO_PAD.decode(HEADER).unwrap();
        assert_eq!(json, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn signs_what_it_then_accepts() {
        let key = Hs256::new(&[7; KEY_LEN]);
        let mut token = Vec::new();
        key.sign_into(&mut token, 1, 2, "ab").unwrap();
        let token = String::from_utf8(token).unwrap();
        assert_eq!(key.verify(&token), Ok(()));
        let claims = token.split('.').nth(1).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(claims).unwrap(),
            br#"{"iat":1,"exp":2,"jti":"ab"}"#
        );
        assert_eq!(
            Hs256::new(&[8; KEY_LEN]).verify(&token),
            Err(VerifyError::InvalidSignature)
        );
    }

    #[test]
    fn the_longest_claims_fit() {
        let key = Hs256::new(&[7; KEY_LEN]);
        let mut token = Vec::new();
        key.sign_into(&mut token, u64::MAX, u64::MAX, &"f".repeat(32))
            .unwrap();
        assert!(key.verify(std::str::from_utf8(&token).unwrap()).is_ok());
    }

    #[test]
    fn another_spelling_of_the_header_is_read() {
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        assert!(says_hs256(&b64(r#"{"typ":"JWT","alg":"HS256","kid":"1"}"#)));
        assert!(!says_hs256(&b64(r#"{"alg":"none"}"#)));
        assert!(!says_hs256(&b64(r#"{"alg":"HS512","typ":"JWT"}"#)));
        assert!(!says_hs256(&b64(r#"{"typ":"JWT"}"#)));
        assert!(!says_hs256("not base64!"));
    }

    /// RFC 7515 §4: the header is a JSON object. Serde's derived struct also takes an array
    /// for it, and skips the strings of fields it does not read without checking their UTF-8.
    #[test]
    fn a_header_is_a_json_object_of_utf8() {
        let b64 = |s: &[u8]| URL_SAFE_NO_PAD.encode(s);
        assert!(!says_hs256(&b64(br#"["HS256"]"#)));
        assert!(!says_hs256(&b64(b"{\"alg\":\"HS256\",\"x\":\"\xff\"}")));
        // Fields it does not read are checked all the same (found by the `agent_verify` fuzz
        // target): a lone surrogate, a number out of range.
        assert!(!says_hs256(&b64(br#"{"alg":"HS256","kid":"\udead"}"#)));
        assert!(!says_hs256(&b64(br#"{"alg":"HS256","n":1e999}"#)));
        assert!(says_hs256(&b64(br#"{"alg":"HS256","kid":"ok"}"#)));
        assert!(says_hs256(&b64(b" {\"alg\":\"HS256\"}")));
        // A member named twice, even to the same value (found by `agent_verify`): another
        // reader may keep the first of two `alg`s where serde_json's `Value` keeps the last.
        assert!(!says_hs256(&b64(br#"{"alg":"HS256","alg":"HS256"}"#)));
        assert!(!says_hs256(&b64(br#"{"alg":"none","alg":"HS256"}"#)));
        assert!(!says_hs256(&b64(br#"{"alg":"HS256","kid":"1","kid":"2"}"#)));
        assert!(!says_hs256(&b64(br#"{"alg":"HS256"} {}"#)));

        let key = Hs256::new(&[7; KEY_LEN]);
        let message = format!("{}.{}", b64(br#"["HS256"]"#), b64(br#"{"exp":1}"#));
        let mut mac = key.keyed.clone();
        mac.update(message.as_bytes());
        let token = format!("{message}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(key.verify(&token), Err(VerifyError::Malformed));
    }
}
