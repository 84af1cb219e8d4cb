//! `Error::from_status` and `Error::from_status_with` over a tonic `Status`: its code, its
//! message (as tonic hands it, decoded) and its metadata, Polykey's `error` JSON included.
//!
//! Input: a code byte (bit 7: the third line is an `error` trailer), then lines: the message,
//! `key:value` metadata entries, and the `error`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tower_agent_session::{Error, Polykey, Rfc6750};

mod bounded;
mod reference;

#[global_allocator]
static GLOBAL: bounded::Counting = bounded::Counting;

fn kind(error: &Option<Error>) -> Option<&'static str> {
    error.as_ref().map(|e| match e {
        Error::TokenNotProvided => "not provided",
        Error::TokenInvalid => "invalid",
        _ => "other",
    })
}

/// What Polykey's `error` JSON names, read as a derived struct reads its `type`.
fn reference_polykey(error: &[u8]) -> Option<Error> {
    match reference::field(error, "type").ok()?? {
        serde_json::Value::String(kind) => match kind.as_str() {
            "ErrorClientAuthMissing" | "ErrorClientJWTTokenNotProvided" => {
                Some(Error::TokenNotProvided)
            }
            "ErrorClientAuthDenied" | "ErrorSessionTokenInvalid" => Some(Error::TokenInvalid),
            _ => None,
        },
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let code = Code::from_i32(i32::from(first & 0x1f) % 17);
    let mut lines = rest.split(|&b| b == b'\n');
    let message = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut metadata = MetadataMap::new();
    let error = if first & 0x80 != 0 {
        lines.next()
    } else {
        None
    };
    if let Some(error) = error
        && let Ok(value) = MetadataValue::try_from(error)
    {
        metadata.insert("error", value);
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(&line[..colon]),
            MetadataValue::try_from(&line[colon + 1..]),
        ) {
            metadata.append(key, value);
        }
    }
    let status = Status::with_metadata(code, message, metadata);

    // The metadata is copied into a header map, the message encoded: a few copies of the input.
    let plain = bounded::within("from_status", data.len(), 8, || Error::from_status(&status));
    let rfc = bounded::within("from_status_with Rfc6750", data.len(), 8, || {
        Error::from_status_with(&status, &Rfc6750)
    });
    let polykey = bounded::within("from_status_with Polykey", data.len(), 8, || {
        Error::from_status_with(&status, &Polykey)
    });

    if code != Code::Unauthenticated {
        assert!(
            plain.is_none() && rfc.is_none(),
            "{code:?}: {plain:?} {rfc:?}"
        );
    }
    // Without a challenge, the message as tonic hands it decides (it is not decoded again).
    if code == Code::Unauthenticated && !status.metadata().contains_key("www-authenticate") {
        let expected = if status
            .message()
            .contains(tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE)
        {
            Error::TokenNotProvided
        } else {
            Error::TokenInvalid
        };
        assert_eq!(kind(&plain), kind(&Some(expected)), "{status:?}");
    }
    // The status read directly, and read as headers by RFC 6750's rules: one answer.
    assert_eq!(kind(&plain), kind(&rfc), "{status:?}");
    // Polykey: a failure its `error` names, or else RFC 6750's reading.
    let named = match status.metadata().get("error") {
        Some(error) if code != Code::Ok => reference_polykey(error.as_bytes()),
        _ => None,
    };
    assert_eq!(kind(&polykey), kind(&named.or(rfc)), "{status:?}");
});
