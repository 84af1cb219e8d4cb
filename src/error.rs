//! [`Error`]: every way a session can fail, with stable exit codes.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bearer::{self, Verdict};
use crate::message::SessionResponse;
use crate::token::MalformedToken;

/// An error of the session: the two session failures of the wire contract, and everything that
/// can go wrong with the session file.
///
/// No variant carries the token. File errors name the path and keep the `io::Error` as their
/// source (behind an `Arc`, so that one failed write can be reported to every call that waited
/// for it).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The agent needs a session token and none was sent (exit code 77).
    #[error("JWT Token not provided in metadata")]
    TokenNotProvided,
    /// The agent rejected the token: expired, or invalidated by a *lock all* (exit code 65).
    #[error("Invalid JWT Token, please reauthenticate.")]
    TokenInvalid,
    /// A token given to the session is not a valid bearer token (exit code 65).
    #[error("malformed session token: {0}")]
    MalformedToken(#[from] MalformedToken),
    /// The session file exists but could not be read (exit code 74, or 77 when permission is
    /// denied).
    #[error("cannot read the session file {}", path.display())]
    ReadFile {
        /// The session file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The session file, or the directory holding it, could not be written (exit code 73 when it
    /// could not be created, 77 when permission is denied, 74 otherwise).
    #[error("cannot write the session file {}", path.display())]
    WriteFile {
        /// The session file (or its directory).
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// A token store other than the file failed, or the session's background work did (exit
    /// code 74). The store's error is the source.
    #[error("the token store failed")]
    Store(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The re-authenticator failed to get a new token (exit code 77). Its error is the source.
    #[error("re-authentication failed")]
    Reauthentication(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// Another process has held the session file's lock longer than this process would wait
    /// (exit code 75, `EX_TEMPFAIL`): it is stopped, or stuck on a slow filesystem. Nothing was
    /// written or removed; trying again later may work.
    #[error(
        "the session file is locked by another process: {} was still held after {waited:?}",
        path.display()
    )]
    Locked {
        /// The lock file; on Windows, the session file itself when a reader kept it open
        /// (Windows refuses to rename over an open file) for as long as the write waits.
        path: PathBuf,
        /// How long this process waited.
        waited: std::time::Duration,
    },
    /// The session file holds something that is not a token (exit code 65).
    #[error("the session file {} does not hold a valid token: {reason}", path.display())]
    CorruptFile {
        /// The session file.
        path: PathBuf,
        /// What is wrong with it (never its content).
        reason: CorruptReason,
    },
    /// The OS keyring of a [`KeyringStore`](crate::KeyringStore) cannot be used: no Secret
    /// Service on the bus, a locked keychain, a daemon gone mid-session (exit code 78,
    /// `EX_CONFIG`: the user must start one or choose the session file). Never a fallback to a
    /// file.
    #[cfg(feature = "keyring")]
    #[cfg_attr(docsrs, doc(cfg(feature = "keyring")))]
    #[error("the {backend} is not available ({detail}): {}", backend.advice())]
    KeyringUnavailable {
        /// The keyring.
        backend: crate::KeyringBackend,
        /// What it said (never what the entry holds).
        detail: String,
    },
    /// The OS keyring's entry holds something that is not a token (exit code 65, as a corrupt
    /// session file): what replaces or removes it (an unlock, a lock) goes on without it.
    #[cfg(feature = "keyring")]
    #[cfg_attr(docsrs, doc(cfg(feature = "keyring")))]
    #[error("the {backend}'s entry does not hold a valid token: {reason}")]
    CorruptEntry {
        /// The keyring.
        backend: crate::KeyringBackend,
        /// What is wrong with it (never its content).
        reason: CorruptReason,
    },
    /// The OS keyring did not answer within the store's bound (a prompt nobody answered, a
    /// daemon that does not reply; exit code 75, `EX_TEMPFAIL`): the session goes on with the
    /// token in memory.
    #[cfg(feature = "keyring")]
    #[cfg_attr(docsrs, doc(cfg(feature = "keyring")))]
    #[error("the {backend} did not answer within {waited:?}")]
    KeyringTimedOut {
        /// The keyring.
        backend: crate::KeyringBackend,
        /// How long the call was waited for; for a call refused at once because an earlier
        /// one still has not answered, how long that one was waited for.
        waited: std::time::Duration,
    },
}

/// What is wrong with a session file's content. Never carries the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// Larger than any token could be.
    #[error("it is {len} bytes, more than the {limit} a session file may hold")]
    TooLarge {
        /// Its size in bytes (as far as it was read).
        len: u64,
        /// The cap.
        limit: u64,
    },
    /// Not UTF-8 text.
    #[error("it is not UTF-8 text")]
    NotUtf8,
    /// Not a regular file (a directory, a FIFO, a device).
    #[error("it is not a regular file")]
    NotAFile,
    /// Text, but not a bearer token.
    #[error("{0}")]
    Malformed(MalformedToken),
}

impl Error {
    /// [`Error::TokenNotProvided`]'s message, as agents send it: part of the wire contract.
    pub const TOKEN_NOT_PROVIDED_MESSAGE: &str = "JWT Token not provided in metadata";

    /// [`Error::TokenInvalid`]'s message, as agents send it: part of the wire contract.
    pub const TOKEN_INVALID_MESSAGE: &str = "Invalid JWT Token, please reauthenticate.";

    /// The process exit code for this error, after BSD's `sysexits.h`.
    ///
    /// | error | code |
    /// |---|---|
    /// | `TokenNotProvided`, permission denied | 77 (`EX_NOPERM`) |
    /// | `TokenInvalid`, malformed token or file | 65 (`EX_DATAERR`) |
    /// | cannot create the file or directory | 73 (`EX_CANTCREAT`) |
    /// | other I/O | 74 (`EX_IOERR`) |
    /// | the session file is locked by another process | 75 (`EX_TEMPFAIL`) |
    ///
    /// The crate docs' [exit code table](crate#exit-codes) adds the codes the example client
    /// uses for its own failures.
    ///
    /// ```
    /// use std::process::ExitCode;
    /// use tower_agent_session::Error;
    ///
    /// assert_eq!(Error::TokenNotProvided.exit_code(), 77);
    /// assert_eq!(Error::TokenInvalid.exit_code(), 65);
    ///
    /// /// How a command-line client ends on a session error.
    /// fn fail(error: &Error) -> ExitCode {
    ///     eprintln!("error: {error}");
    ///     if error.is_session_failure() {
    ///         eprintln!("hint: unlock the agent again");
    ///     }
    ///     // Every code is a sysexits code, 64 to 78.
    ///     ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
    /// }
    /// let _ = fail(&Error::TokenInvalid);
    /// ```
    pub fn exit_code(&self) -> i32 {
        const EX_DATAERR: i32 = 65;
        const EX_CANTCREAT: i32 = 73;
        const EX_IOERR: i32 = 74;
        const EX_TEMPFAIL: i32 = 75;
        const EX_NOPERM: i32 = 77;
        #[cfg(feature = "keyring")]
        const EX_CONFIG: i32 = 78;
        match self {
            Self::TokenNotProvided | Self::Reauthentication(_) => EX_NOPERM,
            Self::TokenInvalid | Self::MalformedToken(_) | Self::CorruptFile { .. } => EX_DATAERR,
            Self::Store(_) => EX_IOERR,
            Self::Locked { .. } => EX_TEMPFAIL,
            #[cfg(feature = "keyring")]
            Self::CorruptEntry { .. } => EX_DATAERR,
            #[cfg(feature = "keyring")]
            Self::KeyringTimedOut { .. } => EX_TEMPFAIL,
            #[cfg(feature = "keyring")]
            Self::KeyringUnavailable { .. } => EX_CONFIG,
            Self::ReadFile { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => EX_NOPERM,
                _ => EX_IOERR,
            },
            Self::WriteFile { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => EX_NOPERM,
                io::ErrorKind::NotFound
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::StorageFull
                | io::ErrorKind::AlreadyExists => EX_CANTCREAT,
                _ => EX_IOERR,
            },
        }
    }

    /// Whether this is one of the two session failures that a new unlock cures.
    pub fn is_session_failure(&self) -> bool {
        matches!(self, Self::TokenNotProvided | Self::TokenInvalid)
    }

    /// The session failure an HTTP or gRPC response carries, if any.
    ///
    /// A response is a session failure when it is HTTP `401`, or gRPC `UNAUTHENTICATED` sent in
    /// the headers (a trailers-only response). Its `www-authenticate` challenge says which:
    /// `error="invalid_token"` is [`Error::TokenInvalid`]; a bare `Bearer` challenge (or
    /// `invalid_request`) is [`Error::TokenNotProvided`]. Without any challenge the gRPC message
    /// decides, and anything else unauthenticated counts as `TokenInvalid`. A rejection whose
    /// challenges are all of other schemes (a proxy's `Basic`), or name another bearer error
    /// (`insufficient_scope`), is not a session failure.
    ///
    /// ```
    /// use tower_agent_session::Error;
    ///
    /// let response = http::Response::builder()
    ///     .status(401)
    ///     .header("www-authenticate", r#"Bearer realm="agent", error="invalid_token""#)
    ///     .body(())
    ///     .unwrap();
    /// assert!(matches!(Error::from_response(&response), Some(Error::TokenInvalid)));
    /// ```
    pub fn from_response(response: &impl SessionResponse) -> Option<Self> {
        Self::from_parts(response.status(), response.headers())
    }

    /// Like [`Error::from_response`], from a status and headers.
    pub fn from_parts(status: http::StatusCode, headers: &http::HeaderMap) -> Option<Self> {
        if !is_rejection(status, headers) {
            return None;
        }
        // The header is the wire's, percent-encoded: decoded here, once. A `%` not followed by
        // two hex digits is kept as it is.
        let message = headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy());
        match bearer::read_challenges(headers.get_all(http::header::WWW_AUTHENTICATE)) {
            Verdict::Invalid => Some(Self::TokenInvalid),
            Verdict::NotProvided => Some(Self::TokenNotProvided),
            Verdict::NotSession => None,
            Verdict::NoChallenge => Some(match message {
                Some(m) if m.contains(Self::TOKEN_NOT_PROVIDED_MESSAGE) => Self::TokenNotProvided,
                _ => Self::TokenInvalid,
            }),
        }
    }

    /// The session failure a tonic [`Status`](tonic::Status) carries, if any: `UNAUTHENTICATED`,
    /// read as [`Error::from_response`] reads its headers.
    ///
    /// ```
    /// use tower_agent_session::Error;
    ///
    /// let status = tonic::Status::unauthenticated("JWT Token not provided in metadata");
    /// assert!(matches!(Error::from_status(&status), Some(Error::TokenNotProvided)));
    /// assert!(Error::from_status(&tonic::Status::not_found("x")).is_none());
    /// ```
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        Self::from_status_with(status, &crate::Rfc6750)
    }

    /// The session failure a tonic [`Status`](tonic::Status) carries, read as `failures` reads
    /// an agent's rejections: its code, message and metadata (for a failure sent after the
    /// response headers, the trailers).
    ///
    /// ```
    /// use tower_agent_session::{Error, Polykey};
    ///
    /// let mut status = tonic::Status::unknown("Unknown Error");
    /// status.metadata_mut().insert(
    ///     "error",
    ///     r#"{"type":"ErrorClientAuthMissing","data":{"exitCode":77}}"#.parse().unwrap(),
    /// );
    /// assert!(matches!(Error::from_status_with(&status, &Polykey), Some(Error::TokenNotProvided)));
    /// ```
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn from_status_with(
        status: &tonic::Status,
        failures: &dyn crate::SessionFailures,
    ) -> Option<Self> {
        // An error of ours that tonic wrapped (a failed re-authentication, say).
        let mut causes = std::iter::successors(std::error::Error::source(status), |e| e.source());
        if let Some(ours) = causes.find_map(|error| error.downcast_ref::<Self>()) {
            return Some(ours.clone());
        }
        let mut headers = status.metadata().clone().into_headers();
        headers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
        // `failures` reads headers as they were on the wire: the message tonic decoded is
        // encoded again, so that it is decoded once (a `%41` in it is what the agent said), and so
        // that text that is not ASCII is kept.
        let message = percent_encoding::utf8_percent_encode(status.message(), GRPC_MESSAGE);
        if let Ok(message) = http::HeaderValue::try_from(message.to_string()) {
            headers.insert("grpc-message", message);
        }
        failures.session_failure(http::StatusCode::OK, &headers)
    }

    pub(crate) fn read(path: &Path, source: io::Error) -> Self {
        Self::ReadFile {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn write(path: &Path, source: io::Error) -> Self {
        Self::WriteFile {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: CorruptReason) -> Self {
        Self::CorruptFile {
            path: path.to_owned(),
            reason,
        }
    }
}

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl From<Error> for tonic::Status {
    /// A session failure becomes `UNAUTHENTICATED` with the contract's message; other errors
    /// become `INTERNAL`.
    fn from(error: Error) -> Self {
        if error.is_session_failure() {
            return tonic::Status::unauthenticated(error.to_string());
        }
        tonic::Status::internal(error.to_string())
    }
}

/// `grpc-status`, a name made once: looked up by a `&str`, a name is parsed and hashed again on
/// every response.
pub(crate) const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Whether a response refuses the call's credentials: HTTP 401, or gRPC `UNAUTHENTICATED` in the
/// headers (a trailers-only response).
pub(crate) fn is_rejection(status: http::StatusCode, headers: &http::HeaderMap) -> bool {
    status == http::StatusCode::UNAUTHORIZED
        || headers
            .get(GRPC_STATUS)
            .is_some_and(|v| v.as_bytes() == b"16") // UNAUTHENTICATED
}

/// What gRPC percent-encodes in `grpc-message`: every byte outside visible ASCII and space
/// (`percent-encoding` always encodes those past ASCII), and `%`.
#[cfg(feature = "tonic")]
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

#[cfg(test)]
mod tests;
