//! Unix: file modes, `stat`, `O_NONBLOCK`, `fsync` of a directory.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::file::FileStamp;

pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub(super) fn private_mode(options: &mut OpenOptions) {
    options.mode(0o600);
}

pub(super) fn open_for_read(path: &Path) -> io::Result<File> {
    // O_NONBLOCK: opening a FIFO must not wait for a writer. It has no effect on the reads of
    // a regular file, and anything else is refused after the open. (std has no name for the
    // flag: this is the crate's one use of libc.)
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

pub(super) fn make_private(_path: &Path) -> io::Result<()> {
    // tempfile creates its files with O_EXCL and mode 0600.
    Ok(())
}

fn stamp(meta: &fs::Metadata) -> FileStamp {
    FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
    }
}

pub(super) fn stamp_of(file: &File) -> io::Result<FileStamp> {
    file.metadata().map(|meta| stamp(&meta))
}

pub(super) fn stamp_at(path: &Path) -> io::Result<FileStamp> {
    fs::metadata(path).map(|meta| stamp(&meta))
}

pub(super) fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino()))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) fn held_open(_e: &io::Error) -> bool {
    // A rename over, or an unlink of, a file others have open always works on Unix.
    false
}

#[cfg(test)]
pub(super) fn is_private(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = fs::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    Ok(mode == if meta.is_dir() { 0o700 } else { 0o600 })
}
