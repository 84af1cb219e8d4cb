//! [`TokenStore`]: where a session keeps its token between processes. The session file
//! ([`TokenFile`](crate::TokenFile)) is the default; [`MemoryStore`] keeps it in memory; an OS keyring or a
//! secrets manager can be another.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;
use crate::file::{FileStamp, ReauthLock};
use crate::token::Token;

/// One version of what a store holds: every write makes a new one, so a session can tell that
/// another writer changed the store without reading the token.
///
/// A store of your own numbers its versions with [`Version::new`]; the session file's are its
/// `stat` (device, inode, size, modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Numbered(u64),
    File(FileStamp),
}

impl Version {
    /// Version number `n` of a store of your own: a new number for every write.
    #[must_use]
    pub const fn new(n: u64) -> Self {
        Self(Kind::Numbered(n))
    }

    pub(crate) fn file(stamp: FileStamp) -> Self {
        Self(Kind::File(stamp))
    }
}

/// What a store held when it was read: the token (if any) and the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The token, or `None` for no token.
    pub token: Option<Token>,
    /// The version read, or `None` when nothing is stored.
    pub version: Option<Version>,
}

/// The outcome of [`TokenStore::swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The store held the expected token and now holds the new one, at this version.
    Replaced(Version),
    /// The store held something else, which the session then adopts.
    Lost(Stored),
}

/// A place a session keeps its token, shared by every process (or every session) that uses it.
///
/// The session calls these methods on a blocking thread, one write at a time per session, and
/// never on the hot path: a call reads the token from memory. The contract:
///
/// - [`store`](Self::store) is an *explicit* write (after an unlock): it always replaces.
/// - [`swap`](Self::swap) is a *refresh* write: it replaces only if the store still holds
///   `expected`, atomically with respect to every other writer, so a refresh never brings back
///   a cleared session nor overwrites another writer's token.
/// - [`version`](Self::version) is cheap (a `stat` for the file) and changes with every write,
///   so a session can notice another writer's change without reading the token.
///
/// What a store shares with the other processes besides its token, it says here, and the
/// session uses it whatever wraps the store: a file whose changes the OS reports
/// ([`watched_file`](Self::watched_file)), and a [`ReauthLock`]
/// ([`reauth_lock`](Self::reauth_lock)). A store that wraps another passes both on:
///
/// ```
/// use tower_agent_session::store::{Stored, Swap, TokenStore, Version};
/// use tower_agent_session::{Error, ReauthLock, Token, TokenFile};
///
/// /// The session file, with every write counted.
/// struct Counted(TokenFile);
///
/// impl TokenStore for Counted {
///     fn load(&self) -> Result<Stored, Error> { self.0.load() }
///     fn store(&self, token: &Token) -> Result<Version, Error> { self.0.store(token) }
///     fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
///         self.0.swap(expected, new)
///     }
///     fn clear(&self) -> Result<(), Error> { self.0.clear() }
///     fn version(&self) -> Result<Option<Version>, Error> { self.0.version() }
///     fn tidy(&self) { self.0.tidy() }
///     fn watched_file(&self) -> Option<std::path::PathBuf> { self.0.watched_file() }
///     fn reauth_lock(&self) -> Option<ReauthLock> { self.0.reauth_lock() }
/// }
/// ```
pub trait TokenStore: Send + Sync + 'static {
    /// Reads the token.
    ///
    /// # Errors
    ///
    /// The store cannot be read, or holds something that is not a token.
    fn load(&self) -> Result<Stored, Error>;

    /// Replaces whatever is stored with `token`.
    ///
    /// # Errors
    ///
    /// The store cannot be written; it then holds what it held.
    fn store(&self, token: &Token) -> Result<Version, Error>;

    /// Replaces the stored token with `new` only if it is `expected` (`None`: no token).
    ///
    /// # Errors
    ///
    /// The store cannot be read or written; it then holds what it held.
    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error>;

    /// Removes the token.
    ///
    /// # Errors
    ///
    /// The store cannot be written; it then holds what it held.
    fn clear(&self) -> Result<(), Error>;

    /// The version stored now, without reading the token; `None` when nothing is stored.
    ///
    /// # Errors
    ///
    /// The store cannot be read.
    fn version(&self) -> Result<Option<Version>, Error>;

    /// Housekeeping when a session starts (the file store removes temp files of writers that
    /// died mid-write). Must not wait and must not fail.
    fn tidy(&self) {}

    /// A file whose every change is a change of this store, for [`Watch::Notify`](crate::Watch::Notify)
    /// to be told of by the OS: the session file itself for [`TokenFile`](crate::TokenFile). `None`
    /// (the default): other processes' changes are seen by polling [`version`](Self::version)
    /// ([`Watch::Poll`](crate::Watch::Poll)), or when a call fails.
    fn watched_file(&self) -> Option<PathBuf> {
        None
    }

    /// The re-authentication lock every process of this store shares: one process
    /// re-authenticates while the others wait for its token, and a lock all is one step for
    /// them all ([`Session::clear_after`](crate::Session::clear_after)). `<name>.reauth.lock`
    /// beside the file for [`TokenFile`](crate::TokenFile). `None` (the default): no such lock;
    /// each process recovers on its own.
    fn reauth_lock(&self) -> Option<ReauthLock> {
        None
    }
}

/// A store shared behind an `Arc`, or chosen at run time (`Arc<dyn TokenStore>`): the store
/// it holds.
///
/// ```
/// use std::sync::Arc;
/// use tower_agent_session::store::{MemoryStore, TokenStore};
/// use tower_agent_session::{Session, TokenFile};
///
/// let in_memory = std::env::var_os("NO_FILE").is_some();
/// let store: Arc<dyn TokenStore> = if in_memory {
///     Arc::new(MemoryStore::new())
/// } else {
///     Arc::new(TokenFile::in_dir(std::env::temp_dir().join("client")))
/// };
/// let session = Session::new(store);
/// ```
impl<S: TokenStore + ?Sized> TokenStore for Arc<S> {
    fn load(&self) -> Result<Stored, Error> {
        (**self).load()
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        (**self).store(token)
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        (**self).swap(expected, new)
    }

    fn clear(&self) -> Result<(), Error> {
        (**self).clear()
    }

    fn version(&self) -> Result<Option<Version>, Error> {
        (**self).version()
    }

    fn tidy(&self) {
        (**self).tidy();
    }

    fn watched_file(&self) -> Option<PathBuf> {
        (**self).watched_file()
    }

    fn reauth_lock(&self) -> Option<ReauthLock> {
        (**self).reauth_lock()
    }
}

/// A token store in memory: for tests, for processes that must leave nothing on disk, and as
/// the model of what a store does. Clones share one slot, as processes share one file.
///
/// ```
/// use tower_agent_session::{store::MemoryStore, Session, Token};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_agent_session::Error> {
/// let store = MemoryStore::new();
/// let session = Session::new(store.clone());
/// session.start_with_token(Token::new("abc")?).await?;
/// assert_eq!(store.token(), Some(Token::new("abc")?));
/// # Ok(()) }
/// ```
// `Debug` shows the token redacted, as `Token`'s own does.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    slot: Arc<Mutex<Slot>>,
}

#[derive(Debug, Default)]
struct Slot {
    token: Option<Token>,
    version: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token it holds now.
    pub fn token(&self) -> Option<Token> {
        self.slot().token.clone()
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        // Every update assigns whole fields: a poisoned lock holds no half-made state.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Slot {
    fn put(&mut self, token: Option<Token>) -> u64 {
        self.token = token;
        self.version += 1;
        self.version
    }

    fn stored(&self) -> Stored {
        Stored {
            token: self.token.clone(),
            version: self.token.as_ref().map(|_| Version::new(self.version)),
        }
    }
}

impl TokenStore for MemoryStore {
    fn load(&self) -> Result<Stored, Error> {
        Ok(self.slot().stored())
    }

    fn store(&self, token: &Token) -> Result<Version, Error> {
        Ok(Version::new(self.slot().put(Some(token.clone()))))
    }

    fn swap(&self, expected: Option<&Token>, new: &Token) -> Result<Swap, Error> {
        let mut slot = self.slot();
        if slot.token.as_ref() == expected {
            Ok(Swap::Replaced(Version::new(slot.put(Some(new.clone())))))
        } else {
            Ok(Swap::Lost(slot.stored()))
        }
    }

    fn clear(&self) -> Result<(), Error> {
        self.slot().put(None);
        Ok(())
    }

    fn version(&self) -> Result<Option<Version>, Error> {
        Ok(self.slot().stored().version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_follows_the_contract() {
        let store = MemoryStore::new();
        let token = |s: &str| Token::new(s).unwrap();
        assert_eq!(store.load().unwrap().token, None);
        assert_eq!(store.version().unwrap(), None);
        let v1 = store.store(&token("a")).unwrap();
        assert_eq!(store.version().unwrap(), Some(v1));
        assert!(matches!(
            store.swap(Some(&token("x")), &token("b")).unwrap(),
            Swap::Lost(Stored { token: Some(_), .. })
        ));
        let Swap::Replaced(v2) = store.swap(Some(&token("a")), &token("b")).unwrap() else {
            panic!("expected a replace");
        };
        assert_ne!(v1, v2);
        store.clear().unwrap();
        assert!(matches!(
            store.swap(Some(&token("b")), &token("c")).unwrap(),
            Swap::Lost(Stored { token: None, .. })
        ));
        assert_eq!(store.token(), None);
    }
}
