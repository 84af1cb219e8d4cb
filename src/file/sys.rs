//! The platform's calls under the file protocol, one portable API over them (as cargo's
//! `flock.rs` keeps its lock): what protects the token (Unix: modes 0700 and 0600; Windows: an
//! owner-only DACL), how a file's version is told (Unix: `stat`'s device and inode; Windows: the
//! volume serial and file index), how the session file is opened for a read, what makes a
//! rename durable, and which failures of a replace only mean that a reader has the file open
//! (only Windows refuses that). Everything else in `file/` is the same on every platform.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use super::FileStamp;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

// The one module of the crate with `unsafe`: Windows' security and file-identity calls, which
// std does not have, through windows-sys (its reasons are on each block).
#[cfg(windows)]
#[allow(unsafe_code)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// Whether a file that another process has open can keep a rename over it, or its removal, from
/// happening: on Windows only.
pub(super) const OPEN_FILES_BLOCK_RENAMES: bool = cfg!(windows);

/// Creates `dir` and its missing parents, each readable by its owner only (Unix: mode 0700;
/// Windows: a protected DACL with one entry, the current user's, which files made inside
/// inherit). A directory that is there already is left as it is.
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    imp::create_private_dir(dir)
}

/// Opens (creating it if missing) a file that lives beside the session file: a lock file, the
/// re-authentication holder's pid. Unix: mode 0600. Windows: the directory's DACL, inherited.
pub(super) fn open_beside(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    imp::private_mode(&mut options);
    options.open(path)
}

/// Opens the session file for a read. Unix: without waiting for a writer if it is a FIFO.
pub(super) fn open_for_read(path: &Path) -> io::Result<File> {
    imp::open_for_read(path)
}

/// Makes a new temp file readable by its owner only, before the token is written to it. Unix:
/// nothing to do, tempfile creates it with mode 0600. Windows: its DACL is set owner-only
/// (protected), whatever the directory's would give it.
pub(super) fn make_private(path: &Path) -> io::Result<()> {
    imp::make_private(path)
}

/// The version of the open file `file`.
pub(super) fn stamp_of(file: &File) -> io::Result<FileStamp> {
    imp::stamp_of(file)
}

/// The version of the file at `path`: `NotFound` if it is not there.
pub(super) fn stamp_at(path: &Path) -> io::Result<FileStamp> {
    imp::stamp_at(path)
}

/// Which file or directory `path` is (its device and inode, or volume serial and file index),
/// if it is there.
pub(crate) fn identity(path: &Path) -> Option<(u64, u64)> {
    imp::identity(path)
}

/// Makes a rename or removal in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    imp::sync_dir(dir)
}

/// Whether `e`, from a rename over the session file or its removal, only means that another
/// process has the file open (Windows refuses both then; Unix never does).
pub(super) fn held_open(e: &io::Error) -> bool {
    imp::held_open(e)
}

/// Whether `path` is readable by its owner only, as [`create_private_dir`] and
/// [`make_private`] leave it: for the tests.
#[cfg(test)]
pub(super) fn is_private(path: &Path) -> io::Result<bool> {
    imp::is_private(path)
}
