//! What the Polykey interoperability tests and `examples/polykey.rs` share: Polykey's generated
//! gRPC client, TLS pinned to the agent's certificate, a real agent process, and the few
//! conventions of Polykey's wire that are not in its `.proto` files.
//!
//! The example includes this module with
//! `#[path = "../tests/polykey_support/mod.rs"] mod polykey_support;`.
#![allow(dead_code)] // each test file and the example use their own part of this

pub mod agent;
#[rustfmt::skip] // generated; `tests/polykey_codegen.rs` keeps it current
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb;
pub mod tls;

use base64::Engine as _;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

#[allow(unused_imports)] // each test file and the example use their own part of these
pub use pb::polykey::v1::{
    agent::InfoMessage,
    client_service_client::ClientServiceClient,
    utils::EmptyMessage,
    vaults::{List as VaultListItem, Vault},
};

/// The metadata key Polykey reads credentials from and writes refreshed tokens to.
pub const AUTHORIZATION: &str = "authorization";
/// The trailer in which grpc-js carries Polykey's error as JSON (`{"type", "data", …}`).
pub const ERROR_TRAILER: &str = "error";

/// `Basic base64(":" + password)`: how Polykey's client sends the password. Every call accepts
/// it, and every call made with it answers with a session token.
pub fn basic_authorization(password: &str) -> AsciiMetadataValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(":{password}"));
    // Base64 and the scheme are ASCII; nothing here can be refused.
    let mut value =
        AsciiMetadataValue::try_from(format!("Basic {encoded}")).expect("base64 is ASCII");
    // A secret: kept out of `Debug` and out of HTTP/2's header compression table.
    value.set_sensitive(true);
    value
}

/// `Bearer <token>`, the form the agent accepts (the scheme is case-sensitive).
pub fn bearer_authorization(
    token: &str,
) -> Result<AsciiMetadataValue, tower_agent_session::BoxError> {
    let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// `message` as a request carrying the password.
pub fn with_password<T>(message: T, password: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(AUTHORIZATION, basic_authorization(password));
    request
}

/// `message` as a request carrying a session token, for calls made outside the session layer.
pub fn with_bearer<T>(
    message: T,
    token: &str,
) -> Result<tonic::Request<T>, tower_agent_session::BoxError> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(AUTHORIZATION, bearer_authorization(token)?);
    Ok(request)
}

/// The session token in a response's headers (`authorization: Bearer <token>`), if any.
pub fn bearer_token(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get(AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.to_owned())
}

/// Polykey's error, as the agent puts it in the `error` trailer of a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolykeyError {
    /// The error class, e.g. `ErrorClientAuthMissing` or `ErrorClientAuthDenied`.
    pub kind: String,
    /// Its `data.description`.
    pub description: String,
    /// Its `data.exitCode` (77 for both session failures).
    pub exit_code: Option<i64>,
}

/// Reads the `error` trailer of a failed call; `None` when there is none or it is not Polykey's
/// JSON.
pub fn polykey_error(status: &tonic::Status) -> Option<PolykeyError> {
    let raw = status.metadata().get(ERROR_TRAILER)?.to_str().ok()?;
    let json: serde_json::Value = serde_json::from_str(raw).ok()?;
    let data = &json["data"];
    Some(PolykeyError {
        kind: json["type"].as_str()?.to_owned(),
        description: data["description"].as_str().unwrap_or_default().to_owned(),
        exit_code: data["exitCode"].as_i64(),
    })
}
