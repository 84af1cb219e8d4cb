//! The signing key: drawn from the operating system, and kept in a file when sessions must
//! survive a restart of the agent.

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::Path;

use super::error::KeyError;
use super::manager::KEY_LEN;

/// The length of a token id (`jti`), in bytes: 128 random bits, as for a random UUID.
pub(super) const ID_LEN: usize = 16;

/// Random bytes for token ids, drawn from the operating system a batch at a time: one system
/// call per 32 tokens instead of one per token, which on a VM costs as much as the rest of a
/// mint. Per thread, so that minting takes no lock.
///
/// A process forked after minting would hand out its parent's next ids; ids only tell tokens
/// apart (the signature is what makes a token unguessable), and the agent does not fork.
struct IdPool {
    bytes: [u8; ID_LEN * 32],
    next: usize,
}

thread_local! {
    // Const already: clippy 1.96 says otherwise for Windows targets, whose `thread_local!`
    // expands differently.
    #[allow(clippy::missing_const_for_thread_local)]
    static IDS: RefCell<IdPool> = const {
        RefCell::new(IdPool {
            bytes: [0; ID_LEN * 32],
            next: ID_LEN * 32,
        })
    };
}

/// A random token id.
pub(super) fn random_id() -> Result<[u8; ID_LEN], io::Error> {
    let from_pool = IDS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        let IdPool { bytes, next } = &mut *pool;
        if *next + ID_LEN > bytes.len() {
            getrandom::fill(bytes).map_err(random_error)?;
            *next = 0;
        }
        let mut id = [0; ID_LEN];
        let taken = &mut bytes[*next..*next + ID_LEN];
        id.copy_from_slice(taken);
        // Forget it, so that what stays in memory tells no id handed out.
        taken.fill(0);
        *next += ID_LEN;
        Ok(id)
    });
    // The thread is exiting and its pool is gone: ask the OS directly.
    from_pool.unwrap_or_else(|_| {
        let mut id = [0; ID_LEN];
        getrandom::fill(&mut id).map_err(random_error)?;
        Ok(id)
    })
}

/// A token id as its `jti` claim holds it: lowercase hexadecimal digits, two a byte.
pub(super) fn hex(bytes: &[u8; ID_LEN]) -> [u8; ID_LEN * 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; ID_LEN * 2];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

pub(super) fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut secret = [0; KEY_LEN];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Random(random_error(e)))?;
    Ok(secret)
}

/// `getrandom::Error` only implements `std::error::Error` with its `std` feature; carry the OS
/// error instead.
pub(super) fn random_error(e: getrandom::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(e.to_string()),
    }
}

/// Reads the key, or `None` when the file does not exist.
pub(super) fn read_key_file(path: &Path) -> Result<Option<[u8; KEY_LEN]>, KeyError> {
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
pub(super) fn write_key_file(
    path: &Path,
    secret: &[u8; KEY_LEN],
    overwrite: bool,
) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_pairs() {
        let mut id = [0x11; ID_LEN];
        id[..4].copy_from_slice(&[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(&hex(&id), b"000fa5ff111111111111111111111111");
    }

    #[test]
    fn ids_differ_across_refills() {
        let ids: std::collections::HashSet<_> = (0..100).map(|_| random_id().unwrap()).collect();
        assert_eq!(ids.len(), 100);
    }
}
