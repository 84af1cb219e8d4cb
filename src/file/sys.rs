//! The platform's calls under the file protocol, one portable API over them (as cargo's
//! `flock.rs` keeps its lock): what protects the token (Unix: modes 0700 and 0600; Windows: an
//! owner-only DACL), how a file's version is told (Unix: `stat`'s device and inode; Windows: the
//! volume serial and file index), how the session file is opened for a read, what makes a
//! rename durable, and which failures of a replace only mean that a reader has the file open
//! (only Windows refuses that). Everything else in `file/` is the same on every platform.
//!
//! Each platform's module has the same functions: `create_private_dir`, `open_for_read`,
//! `make_private`, `stamp_of`, `stamp_at`, `sync_dir`, `held_open`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(super) use unix::*;

// The one module of the crate with `unsafe`: Windows' security calls, which std does not have,
// through windows-sys (its reasons are on each block).
#[cfg(windows)]
#[allow(unsafe_code)]
mod windows;
#[cfg(windows)]
pub(super) use windows::*;

/// Whether a file that another process has open can keep a rename over it, or its removal, from
/// happening: on Windows only.
pub(super) const OPEN_FILES_BLOCK_RENAMES: bool = cfg!(windows);

/// Opens (creating it if missing) a file that lives beside the session file: a lock file, the
/// re-authentication holder's pid. Unix: mode 0600. Windows: the directory's DACL, inherited.
pub(super) fn open_beside(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Which file or directory `path` is (its device and inode; on Windows its volume serial and
/// file index), if it is there.
pub(crate) fn identity(path: &Path) -> Option<(u64, u64)> {
    stamp_at(path).ok().map(|stamp| (stamp.dev, stamp.ino))
}
