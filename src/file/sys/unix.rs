//! Unix: file modes, `stat`, `O_NONBLOCK`, `fsync` of a directory.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::file::FileStamp;

/// Creates `dir` and its missing parents, each with mode 0700. A directory that is there
/// already is left as it is.
pub(in crate::file) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens the session file for a read, with `O_NONBLOCK`: opening a FIFO must not wait for a
/// writer. It has no effect on the reads of a regular file, and anything else is refused after
/// the open. (std has no name for the flag: this is the crate's one use of libc.)
pub(in crate::file) fn open_for_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Makes a new temp file readable by its owner only: nothing to do, tempfile creates its files
/// with `O_EXCL` and mode 0600.
pub(in crate::file) fn make_private(_path: &Path) -> io::Result<()> {
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

/// The version of the open file `file`.
pub(in crate::file) fn stamp_of(file: &File) -> io::Result<FileStamp> {
    file.metadata().map(|meta| stamp(&meta))
}

/// The version of the file at `path`: `NotFound` if it is not there.
pub(in crate::file) fn stamp_at(path: &Path) -> io::Result<FileStamp> {
    fs::metadata(path).map(|meta| stamp(&meta))
}

/// Makes a rename or removal in `dir` durable.
pub(in crate::file) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `e`, from a rename over the session file or its removal, only means that another
/// process has the file open: never on Unix, where both always work.
pub(in crate::file) fn held_open(_e: &io::Error) -> bool {
    false
}
