//! [`SessionManager`]: mints and verifies the agent's session tokens, and locks them all at once.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::Token;

/// The length of the signing key, in bytes: the output size of SHA-256, as RFC 7518 §3.2 asks
/// of an HS256 key.
pub const KEY_LEN: usize = 32;

/// How long a token is valid when [`SessionManager::with_lifetime`] is not called.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Grace past `exp` accepted by [`SessionManager::verify`] unless
/// [`SessionManager::with_leeway`] says otherwise.
///
/// The agent both mints and checks its tokens, so there is no clock skew to absorb; the grace is
/// for a call in flight: a client that sends a token a moment before `exp` should not lose that
/// call because it reached the agent a moment after. `exp` has whole seconds, so two seconds
/// covers that without noticeably lengthening a session.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(2);

/// The most grace [`SessionManager::with_leeway`] grants. A grace longer than a session is
/// meaningless, and `jsonwebtoken` subtracts it from the current time, which must not underflow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Mints and verifies the agent's session tokens.
///
/// Tokens are HS256 JWTs carrying `iat`, `exp` and a random `jti`, signed with a 32-byte key
/// drawn from the operating system. [`lock_all`](Self::lock_all) replaces the key, which
/// invalidates every token issued before in one step. The key can live in a file
/// ([`with_key_file`](Self::with_key_file)) so that sessions survive an agent restart.
///
/// Cloning is cheap and clones share the key: a `lock_all` through one clone is seen by all.
/// Minting and verifying read the key without taking a lock, so they are safe to call from many
/// threads while another rotates the key. Configuration set with the `with_*` methods belongs to
/// the value it is called on (and to clones made from it afterwards).
///
/// The key never appears in `Debug` output.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use agent_session::agent::{SessionManager, VerifyError};
///
/// let manager = SessionManager::new()?.with_lifetime(Duration::from_secs(600));
/// let token = manager.mint()?;
/// assert_eq!(manager.verify(&token), Ok(()));
///
/// let stale = manager.mint_expiring_at(SystemTime::now() - Duration::from_secs(3600))?;
/// assert_eq!(manager.verify(&stale), Err(VerifyError::Expired));
///
/// manager.lock_all()?;
/// assert_eq!(manager.verify(&token), Err(VerifyError::InvalidSignature));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SessionManager {
    shared: Arc<Shared>,
    lifetime: Duration,
    validation: Arc<Validation>,
}

struct Shared {
    key: ArcSwap<Key>,
    key_file: Option<PathBuf>,
    /// Serialises key rotations so that the key file and the key in memory end up the same.
    rotating: Mutex<()>,
}

struct Key {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8; KEY_LEN]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// The key that verified a token, kept so that a refresh is signed with that key only.
#[derive(Clone)]
pub(crate) struct VerifiedKey(Arc<Key>);

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    iat: u64,
    exp: u64,
    jti: String,
}

impl SessionManager {
    /// A manager with a fresh random key held only in memory: every session ends with the
    /// process.
    pub fn new() -> Result<Self, KeyError> {
        Ok(Self::with_secret(&random_key()?, None))
    }

    /// A manager whose key lives in `path`, so that sessions survive a restart of the agent.
    ///
    /// The key is read from `path` if the file exists; otherwise a new key is written there
    /// (mode `0600`, atomically: a temporary file in the same directory, synced, renamed, then
    /// the directory synced), creating missing directories with mode `0700`. If another process
    /// creates the file first, its key is used. A file that other users may read is refused
    /// with [`KeyError::Insecure`].
    ///
    /// This does blocking file I/O: call it at start-up, or from a blocking task.
    pub fn with_key_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        if let Some(secret) = read_key_file(path)? {
            return Ok(Self::with_secret(&secret, Some(path)));
        }
        let secret = random_key()?;
        match write_key_file(path, &secret, false) {
            Ok(()) => Ok(Self::with_secret(&secret, Some(path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_key_file(path)? {
                Some(theirs) => Ok(Self::with_secret(&theirs, Some(path))),
                None => Err(KeyError::write(path, e)),
            },
            Err(e) => Err(KeyError::write(path, e)),
        }
    }

    fn with_secret(secret: &[u8; KEY_LEN], key_file: Option<&Path>) -> Self {
        Self {
            shared: Arc::new(Shared {
                key: ArcSwap::from_pointee(Key::new(secret)),
                key_file: key_file.map(Path::to_owned),
                rotating: Mutex::new(()),
            }),
            lifetime: DEFAULT_LIFETIME,
            validation: Arc::new(validation(DEFAULT_LEEWAY)),
        }
    }

    /// Sets how long a minted token is valid (default [`DEFAULT_LIFETIME`], one hour).
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Sets the grace accepted past a token's `exp`, in whole seconds (default
    /// [`DEFAULT_LEEWAY`]); more than [`MAX_LEEWAY`] is taken as [`MAX_LEEWAY`].
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.validation = Arc::new(validation(leeway.min(MAX_LEEWAY)));
        self
    }

    /// How long a minted token is valid.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The file the key is kept in, if any.
    pub fn key_file(&self) -> Option<&Path> {
        self.shared.key_file.as_deref()
    }

    /// Mints a token valid for [`lifetime`](Self::lifetime) from now.
    pub fn mint(&self) -> Result<Token, MintError> {
        self.mint_expiring_at(SystemTime::now() + self.lifetime)
    }

    /// Mints a token that expires at `expires_at`, which may be in the past: the way to make an
    /// expired token without waiting for one.
    pub fn mint_expiring_at(&self, expires_at: SystemTime) -> Result<Token, MintError> {
        mint_with(&self.shared.key.load(), expires_at)
    }

    /// Checks that `token` was signed with the current key and has not expired.
    ///
    /// A token issued before the last [`lock_all`](Self::lock_all) fails with
    /// [`VerifyError::InvalidSignature`].
    pub fn verify(&self, token: &Token) -> Result<(), VerifyError> {
        self.verify_key(token).map(drop)
    }

    /// Like [`verify`](Self::verify), and says which key verified the token.
    pub(crate) fn verify_key(&self, token: &Token) -> Result<VerifiedKey, VerifyError> {
        let key = self.shared.key.load_full();
        jsonwebtoken::decode::<Claims>(token.expose(), &key.decoding, &self.validation)
            .map_err(|e| VerifyError::from_kind(e.kind()))?;
        Ok(VerifiedKey(key))
    }

    /// A new token signed with `key`, or `None` when `key` is no longer the current key: a
    /// session verified before a [`lock_all`](Self::lock_all) must not come out of it with a
    /// token that is valid after.
    pub(crate) fn refresh(&self, key: &VerifiedKey) -> Option<Result<Token, MintError>> {
        let current = self.shared.key.load();
        if !Arc::ptr_eq(&current, &key.0) {
            return None;
        }
        Some(mint_with(&key.0, SystemTime::now() + self.lifetime))
    }

    /// Replaces the key, so that every token issued before fails verification from now on.
    ///
    /// With a key file, the new key is written to it first (atomically, as in
    /// [`with_key_file`](Self::with_key_file)); this is blocking I/O. If writing fails the key in
    /// memory is replaced anyway, since the caller asked for every session to end now, and the
    /// error says that the file still holds the old key: an agent restarted from it would accept
    /// the old tokens again.
    pub fn lock_all(&self) -> Result<(), KeyError> {
        let secret = random_key()?;
        let _rotating = self
            .shared
            .rotating
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let saved = match &self.shared.key_file {
            Some(path) => write_key_file(path, &secret, true).map_err(|e| KeyError::write(path, e)),
            None => Ok(()),
        };
        self.shared.key.store(Arc::new(Key::new(&secret)));
        saved
    }
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("key", &"<redacted>")
            .field("key_file", &self.shared.key_file)
            .field("lifetime", &self.lifetime)
            .field("leeway", &Duration::from_secs(self.validation.leeway))
            .finish()
    }
}

fn validation(leeway: Duration) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = leeway.as_secs();
    validation.set_required_spec_claims(&["exp"]);
    validation
}

fn mint_with(key: &Key, expires_at: SystemTime) -> Result<Token, MintError> {
    let mut jti = [0; 16];
    getrandom::fill(&mut jti).map_err(|e| MintError::Random(random_error(e)))?;
    let claims = Claims {
        iat: unix_secs(SystemTime::now()),
        exp: unix_secs(expires_at),
        jti: hex(&jti),
    };
    let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key.encoding)
        .map_err(|e| MintError::Encode(Box::new(e)))?;
    Token::new(jwt).map_err(|e| MintError::Encode(Box::new(e)))
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut secret = [0; KEY_LEN];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(random_error(e)))?;
    Ok(secret)
}

/// `getrandom::Error` only implements `std::error::Error` with its `std` feature; carry the OS
/// error instead.
fn random_error(e: getrandom::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(e.to_string()),
    }
}

/// Reads the key, or `None` when the file does not exist.
fn read_key_file(path: &Path) -> Result<Option<[u8; KEY_LEN]>, KeyError> {
    let read = |e| KeyError::Read {
        path: path.to_owned(),
        source: e,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let metadata = file.metadata().map_err(read)?;
    if !metadata.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Insecure {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let mut bytes = Vec::with_capacity(KEY_LEN + 1);
    // One byte more than a key, to tell a key from a longer file without reading all of it.
    file.take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    let secret = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongSize {
        path: path.to_owned(),
        len: metadata.len(),
    })?;
    Ok(Some(secret))
}

/// Writes the key atomically; with `overwrite` false an existing file is left alone and the
/// error is `AlreadyExists`.
fn write_key_file(path: &Path, secret: &[u8; KEY_LEN], overwrite: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    create_private_dir(dir)?;
    // `NamedTempFile` creates the file with mode 0600.
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(secret)?;
    temp.as_file().sync_all()?;
    if overwrite {
        temp.persist(path).map_err(|e| e.error)?;
    } else {
        temp.persist_noclobber(path).map_err(|e| e.error)?;
    }
    sync_dir(dir)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes the rename durable: without this a crash can leave the directory pointing at the old
/// file.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

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
    fn from_kind(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::InvalidSignature => Self::InvalidSignature,
            _ => Self::Malformed,
        }
    }

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
    fn write(path: &Path, source: io::Error) -> Self {
        Self::Write {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn debug_hides_the_key() {
        let manager = SessionManager::new().unwrap();
        let text = format!("{manager:?}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn refresh_is_refused_after_a_rotation() {
        let manager = SessionManager::new().unwrap();
        let token = manager.mint().unwrap();
        let key = manager.verify_key(&token).unwrap();
        assert!(matches!(manager.refresh(&key), Some(Ok(_))));
        manager.lock_all().unwrap();
        assert!(manager.refresh(&key).is_none());
    }

    #[test]
    fn leeway_is_applied_and_configurable() {
        let manager = SessionManager::new().unwrap();
        // The default, read back rather than timed: a token expired "just now" would be
        // accepted only if the check ran within the grace of the mint, which a loaded machine
        // does not promise.
        assert!(
            format!("{manager:?}").contains(&format!("leeway: {DEFAULT_LEEWAY:?}")),
            "{manager:?}"
        );
        let expired = manager
            .mint_expiring_at(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let lenient = manager.clone().with_leeway(Duration::from_secs(3600));
        assert_eq!(lenient.verify(&expired), Ok(()));
        let strict = manager.clone().with_leeway(Duration::ZERO);
        assert_eq!(strict.verify(&expired), Err(VerifyError::Expired));
        assert_eq!(manager.verify(&expired), Err(VerifyError::Expired));
    }
}
