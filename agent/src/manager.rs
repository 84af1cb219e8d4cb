//! [`SessionManager`]: mints and verifies the agent's session tokens, and locks them all at once.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;

use super::cache::VerifiedTokens;
use super::error::{KeyError, MintError, VerifyError};
use super::jwt::Hs256;
use super::key::{hex, random_id, random_key, read_key_file, write_key_file};
use tower_agent_session::Token;

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
/// meaningless, and it is subtracted from the current time, which must not underflow.
pub const MAX_LEEWAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Mints and verifies the agent's session tokens.
///
/// Tokens are standard HS256 JWTs (header `{"alg":"HS256","typ":"JWT"}`, base64url without
/// padding) carrying `iat`, `exp` and a random `jti`, signed with a 32-byte key drawn from the
/// operating system, so that any JWT library given the key can check them.
/// [`lock_all`](Self::lock_all) replaces the key, which invalidates every token issued before
/// in one step. The key can live in a file
/// ([`with_key_file`](Self::with_key_file)) so that sessions survive an agent restart.
///
/// Cloning is cheap and clones share the key: a `lock_all` through one clone is seen by all.
/// Minting and verifying read the key without taking a lock, so they are safe to call from many
/// threads while another rotates the key. Configuration set with the `with_*` methods belongs to
/// the value it is called on (and to clones made from it afterwards).
///
/// The key never appears in `Debug` output.
///
/// Two things keep a call cheap. A token the key has already verified is recognised by its
/// bytes from a small cache (its `exp` is still compared with the clock on every call; a
/// `lock_all` empties the cache with the key). And a refresh is minted at most once a second
/// per key: every call answered in the same second, whatever its session, gets the same
/// token, byte for byte, as Polykey's agent does. Its `exp` has whole seconds, so a second
/// mint in that second would buy the client nothing; sessions are not told apart by their
/// tokens here (a `lock_all` ends all of them), so sharing one gives no one more than they had.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_agent_session_agent::{SessionManager, VerifyError};
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
    /// Grace past `exp`, in seconds.
    leeway: u64,
}

struct Shared {
    key: ArcSwap<Key>,
    key_file: Option<PathBuf>,
    /// Serialises key rotations so that the key file and the key in memory end up the same.
    rotating: Mutex<()>,
}

/// One key, with its HMAC state computed once, the tokens it verified, and its refresh of the
/// current second.
struct Key {
    hs256: Hs256,
    verified: VerifiedTokens,
    refresh: ArcSwapOption<Minted>,
    /// Held while a refresh is minted, so that a second has one refresh however many calls
    /// find the last one stale at once.
    minting: Mutex<()>,
}

impl Key {
    fn new(secret: &[u8; KEY_LEN]) -> Self {
        Self {
            hs256: Hs256::new(secret),
            verified: VerifiedTokens::new(),
            refresh: ArcSwapOption::empty(),
            minting: Mutex::new(()),
        }
    }

    /// The refresh minted for this second and lifetime, if there is one.
    fn refresh_of(&self, iat: u64, exp: u64) -> Option<HeaderValue> {
        let minted = self.refresh.load();
        let minted = minted.as_ref()?;
        (minted.iat == iat && minted.exp == exp).then(|| minted.value.clone())
    }
}

/// A refresh as minted: `Bearer <token>`, and the second it was minted in and its `exp`, which
/// say whether it can be handed out again.
struct Minted {
    iat: u64,
    exp: u64,
    value: HeaderValue,
}

/// `Bearer `, in front of a token in an `authorization` value.
const BEARER: &[u8] = b"Bearer ";

/// The key that verified a token, kept so that a refresh is signed with that key only.
#[derive(Clone)]
pub(crate) struct VerifiedKey(Arc<Key>);

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
            leeway: DEFAULT_LEEWAY.as_secs(),
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
        self.leeway = leeway.min(MAX_LEEWAY).as_secs();
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
        let mut jwt = Vec::with_capacity(TOKEN_CAPACITY);
        mint_into(
            &self.shared.key.load(),
            &mut jwt,
            SystemTime::now(),
            expires_at,
        )?;
        let jwt = String::from_utf8(jwt).map_err(|e| MintError::Encode(Box::new(e)))?;
        Token::new(jwt).map_err(|e| MintError::Encode(Box::new(e)))
    }

    /// Checks that `token` was signed with the current key and has not expired.
    ///
    /// A token issued before the last [`lock_all`](Self::lock_all) fails with
    /// [`VerifyError::InvalidSignature`]. A token whose `exp` is no time ([`Token::expires_at`]
    /// is `None`: no `exp`, or one past what a `SystemTime` holds, as `{"exp":1e300}`) is
    /// [`VerifyError::Malformed`] however it is signed: this agent never mints one.
    pub fn verify(&self, token: &Token) -> Result<(), VerifyError> {
        self.verify_key(token).map(drop)
    }

    /// Like [`verify`](Self::verify), and says which key verified the token.
    pub(crate) fn verify_key(&self, token: &Token) -> Result<VerifiedKey, VerifyError> {
        self.verify_key_at(token, SystemTime::now())
    }

    fn verify_key_at(&self, token: &Token, now: SystemTime) -> Result<VerifiedKey, VerifyError> {
        let key = self.shared.key.load_full();
        let bytes = token.expose().as_bytes();
        let exp = match key.verified.get(bytes) {
            Some(exp) => exp,
            None => {
                key.hs256.verify(token.expose())?;
                // The claims were read once, when the token was made (`Token::new` reads
                // `exp`); the signature says they are the agent's. An `exp` that is no time
                // fails closed (see `verify`).
                let exp = token
                    .expires_at()
                    .map(unix_secs)
                    .ok_or(VerifyError::Malformed)?;
                // An expired token is not worth a slot.
                self.check_expiry(exp, now)?;
                key.verified.insert(bytes, exp);
                return Ok(VerifiedKey(key));
            }
        };
        self.check_expiry(exp, now)?;
        Ok(VerifiedKey(key))
    }

    /// [`verify_key`](Self::verify_key) of a token this key has verified before, by its bytes
    /// alone: no [`Token`] made, no HMAC. `None` when the bytes are not in the key's cache; the
    /// caller then reads them in full.
    pub(crate) fn verify_cached(&self, token: &[u8]) -> Option<Result<VerifiedKey, VerifyError>> {
        self.verify_cached_at(token, SystemTime::now())
    }

    fn verify_cached_at(
        &self,
        token: &[u8],
        now: SystemTime,
    ) -> Option<Result<VerifiedKey, VerifyError>> {
        let key = self.shared.key.load_full();
        let exp = key.verified.get(token)?;
        Some(self.check_expiry(exp, now).map(|()| VerifiedKey(key)))
    }

    /// `Expired` when `exp`, with the leeway, is before `now`: checked on every call, cached or
    /// not.
    fn check_expiry(&self, exp: u64, now: SystemTime) -> Result<(), VerifyError> {
        if exp < unix_secs(now).saturating_sub(self.leeway) {
            return Err(VerifyError::Expired);
        }
        Ok(())
    }

    /// A new token signed with `key`, as the `authorization: Bearer <token>` value of a
    /// response (marked sensitive), or `None` when `key` is no longer the current key: a
    /// session verified before a [`lock_all`](Self::lock_all) must not come out of it with a
    /// token that is valid after.
    ///
    /// At most one refresh is minted per key, second and lifetime: the calls of one second get
    /// the same value (a clone of the same bytes). A refresh is in the key's cache of verified
    /// tokens from the start, so the calls that bring it back are recognised without an HMAC.
    ///
    /// The value is built in one buffer, never as a [`Token`]: the agent has no use for the
    /// checks and the parse of `exp` that making one costs.
    pub(crate) fn refresh(&self, key: &VerifiedKey) -> Option<Result<HeaderValue, MintError>> {
        self.refresh_at(key, SystemTime::now())
    }

    fn refresh_at(
        &self,
        key: &VerifiedKey,
        now: SystemTime,
    ) -> Option<Result<HeaderValue, MintError>> {
        let current = self.shared.key.load();
        if !Arc::ptr_eq(&current, &key.0) {
            return None;
        }
        let key = &key.0;
        let (iat, exp) = (unix_secs(now), unix_secs(now + self.lifetime));
        if let Some(value) = key.refresh_of(iat, exp) {
            return Some(Ok(value));
        }
        let _minting = key.minting.lock().unwrap_or_else(PoisonError::into_inner);
        // Another call may have minted this second's while this one waited.
        if let Some(value) = key.refresh_of(iat, exp) {
            return Some(Ok(value));
        }
        let mut value = Vec::with_capacity(TOKEN_CAPACITY);
        value.extend_from_slice(BEARER);
        let minted = mint_into(key, &mut value, now, now + self.lifetime).and_then(|()| {
            key.verified.insert(&value[BEARER.len()..], exp);
            let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
                .map_err(|e| MintError::Encode(Box::new(e)))?;
            value.set_sensitive(true);
            key.refresh.store(Some(Arc::new(Minted {
                iat,
                exp,
                value: value.clone(),
            })));
            Ok(value)
        });
        Some(minted)
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
        let old = self.shared.key.swap(Arc::new(Key::new(&secret)));
        // The new key starts with an empty cache; the old one's is emptied too, for the calls
        // that loaded it just before the swap.
        old.verified.clear();
        old.refresh.store(None);
        saved
    }
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("key", &"<redacted>")
            .field("key_file", &self.shared.key_file)
            .field("lifetime", &self.lifetime)
            .field("leeway", &Duration::from_secs(self.leeway))
            .finish()
    }
}

/// Appends a new token signed with `key`, issued at `now`, to `out`.
fn mint_into(
    key: &Key,
    out: &mut Vec<u8>,
    now: SystemTime,
    expires_at: SystemTime,
) -> Result<(), MintError> {
    let jti = hex(&random_id().map_err(MintError::Random)?);
    let jti = std::str::from_utf8(&jti).map_err(|e| MintError::Encode(Box::new(e)))?;
    key.hs256
        .sign_into(out, unix_secs(now), unix_secs(expires_at), jti)
        .map_err(|e| MintError::Encode(Box::new(e)))
}

/// Room for a minted token: header, claims with two 10-digit times and a 32-character id,
/// signature, and `Bearer ` in front when the token goes straight into a header.
const TOKEN_CAPACITY: usize = 200;

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests;
