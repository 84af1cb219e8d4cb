//! Why a token was refused, or could not be minted, or the key could not be had.

use std::io;
use std::path::{Path, PathBuf};

use super::manager::KEY_LEN;
#[cfg(doc)]
use super::manager::SessionManager;

/// Why a token was refused by [`SessionManager::verify`]. Never carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token's `exp` is past (beyond the leeway).
    #[error("the session token has expired")]
    Expired,
    /// The signature does not match the current key: the token was issued before the last
    /// *lock all*, by another agent, or forged.
    #[error("the session token is not signed by the agent's current key")]
    InvalidSignature,
    /// Not an HS256 JWT with this agent's claims.
    #[error("the session token is not a token of this agent")]
    Malformed,
}

impl VerifyError {
    /// A few words for the `error_description` of a `www-authenticate` challenge.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Expired => "token expired",
            Self::InvalidSignature => "token invalid",
            Self::Malformed => "token malformed",
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The operating system's random source failed (for the token id).
    #[error("the random source failed")]
    Random(#[source] io::Error),
    /// The JWT could not be built.
    #[error("cannot encode the session token")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why the signing key could not be made, loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file exists but could not be read.
    #[error("cannot read the key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The key file, or its directory, could not be written.
    #[error("cannot write the key file {}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The key file does not hold exactly [`KEY_LEN`] bytes.
    #[error("the key file {} is {len} bytes long, not {KEY_LEN}", path.display())]
    WrongSize {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The key file is not a regular file.
    #[error("the key file {} is not a regular file", path.display())]
    NotAFile {
        /// The key file.
        path: PathBuf,
    },
    /// The key file may be read or written by users other than its owner.
    #[error("the key file {} has mode {mode:o}; it must not be open to group or others", path.display())]
    Insecure {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system's random source failed.
    #[error("the random source failed")]
    Random(#[source] io::Error),
}

impl KeyError {
    pub(super) fn write(path: &Path, source: io::Error) -> Self {
        Self::Write {
            path: path.to_owned(),
            source,
        }
    }
}
