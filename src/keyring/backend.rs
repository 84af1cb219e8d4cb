//! [`KeyringBackend`]: which OS credential store holds the token, and the one place that speaks
//! to the keyring-rs stores: an entry made, read, written and deleted, and their errors turned
//! into the crate's, none of which carries what the entry holds.

use std::fmt;
use std::sync::Arc;

use keyring_core::{Entry, Error as KeyringError};

use crate::error::{CorruptReason, Error};
use crate::token::Token;

/// An OS credential store a [`KeyringStore`](crate::KeyringStore) can keep its token in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyringBackend {
    /// macOS: the user's login keychain.
    Keychain,
    /// Windows: the Credential Manager (generic credentials of the user).
    CredentialManager,
    /// Linux and the BSDs: the Secret Service on the session bus (GNOME Keyring, KWallet,
    /// KeePassXC), the one a desktop shows its user.
    SecretService,
    /// Linux: the kernel's key retention service (keyutils): the session keyring, linked
    /// into the user's persistent keyring. Always there, headless too; gone at reboot.
    KeyUtils,
}

impl KeyringBackend {
    /// The desktop's own store here: the Keychain on macOS, the Credential Manager on Windows,
    /// the Secret Service elsewhere.
    #[must_use]
    pub const fn native() -> Self {
        if cfg!(target_os = "macos") {
            Self::Keychain
        } else if cfg!(windows) {
            Self::CredentialManager
        } else {
            Self::SecretService
        }
    }

    /// Its name, as the CLIs spell it: `keychain`, `credential-manager`, `secret-service`,
    /// `keyutils`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Keychain => "keychain",
            Self::CredentialManager => "credential-manager",
            Self::SecretService => "secret-service",
            Self::KeyUtils => "keyutils",
        }
    }

    /// The backend of that name ([`name`](Self::name)), if there is one.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Keychain,
            Self::CredentialManager,
            Self::SecretService,
            Self::KeyUtils,
        ]
        .into_iter()
        .find(|b| b.name() == name)
    }

    /// What a user can do when it is not available.
    pub(crate) const fn advice(self) -> &'static str {
        match self {
            Self::Keychain => "unlock the login keychain, or use the session file",
            Self::CredentialManager => "log on interactively, or use the session file",
            Self::SecretService => {
                "start a Secret Service (gnome-keyring-daemon, KeePassXC) on the session bus, \
                 use the kernel keyring (keyutils), or use the session file"
            }
            Self::KeyUtils => "the kernel's keyring is refused here; use the session file",
        }
    }

    /// The entry for `service` and `account`, in a store made anew (a Secret Service store
    /// connects to the bus: made again after a failure, it finds a daemon that came back).
    pub(super) fn entry(self, service: &str, account: &str) -> Result<Entry, Error> {
        let store = self.store().map_err(|e| self.error(e))?;
        Entry::new_in_store(&store, service, account).map_err(|e| self.error(e))
    }

    fn store(self) -> Result<Arc<keyring_core::CredentialStore>, KeyringError> {
        let unsupported =
            || KeyringError::NotSupportedByStore(format!("{self} is not a store of this platform"));
        match self {
            #[cfg(target_os = "macos")]
            Self::Keychain => Ok(apple_native_keyring_store::keychain::Store::new()?),
            #[cfg(windows)]
            Self::CredentialManager => Ok(windows_native_keyring_store::Store::new()?),
            #[cfg(target_os = "linux")]
            Self::SecretService => Ok(zbus_secret_service_keyring_store::Store::new()?),
            #[cfg(target_os = "linux")]
            Self::KeyUtils => Ok(linux_keyutils_keyring_store::Store::new()?),
            #[allow(unreachable_patterns)]
            _ => Err(unsupported()),
        }
    }

    /// The token the entry holds, if any.
    pub(super) fn get(self, entry: &Entry) -> Result<Option<Token>, Error> {
        match entry.get_secret() {
            Ok(bytes) => {
                let text =
                    String::from_utf8(bytes).map_err(|_| self.corrupt(CorruptReason::NotUtf8))?;
                Token::new(text.trim())
                    .map(Some)
                    .map_err(|e| self.corrupt(CorruptReason::Malformed(e)))
            }
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    pub(super) fn set(self, entry: &Entry, token: &Token) -> Result<(), Error> {
        entry
            .set_secret(token.expose().as_bytes())
            .map_err(|e| self.error(e))
    }

    pub(super) fn delete(self, entry: &Entry) -> Result<(), Error> {
        match entry.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn corrupt(self, reason: CorruptReason) -> Error {
        Error::CorruptEntry {
            backend: self,
            reason,
        }
    }

    /// A keyring error as the crate's. The variants that carry the entry's bytes
    /// (`BadEncoding`, `BadDataFormat`) are said without them.
    fn error(self, e: KeyringError) -> Error {
        let detail = match e {
            KeyringError::BadEncoding(_) | KeyringError::BadDataFormat(..) => {
                return self.corrupt(CorruptReason::NotUtf8);
            }
            KeyringError::PlatformFailure(e) | KeyringError::NoStorageAccess(e) => e.to_string(),
            other => other.to_string(),
        };
        Error::KeyringUnavailable {
            backend: self,
            detail,
        }
    }
}

impl fmt::Display for KeyringBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Keychain => "macOS Keychain",
            Self::CredentialManager => "Windows Credential Manager",
            Self::SecretService => "Secret Service",
            Self::KeyUtils => "kernel keyring (keyutils)",
        })
    }
}
