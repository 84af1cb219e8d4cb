//! Windows: the owner-only DACL (what modes 0700 and 0600 are on Unix), a file's volume serial
//! and index (its device and inode), and what a rename refused for a reader looks like.
//!
//! The crate's only `unsafe`, in [`current_user`] and [`set_owner_only`]: std has no call for a
//! file's security descriptor, and no crate that is kept up sets one safely (windows-permissions
//! and windows-acl wrap these calls, on winapi, unmaintained since 2021 and 2019). Each block
//! calls Win32 functions with pointers to buffers it owns, sized as they ask, and checks each
//! result. The file index is winapi-util's safe wrapper (std has it only behind an unstable
//! feature).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt as _;
use std::os::windows::fs::OpenOptionsExt as _;
use std::os::windows::io::{AsRawHandle as _, FromRawHandle as _, OwnedHandle};
use std::path::Path;

use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, HANDLE};
use windows_sys::Win32::Security::{
    ACL, ACL_REVISION, AddAccessAllowedAceEx, CONTAINER_INHERIT_ACE, DACL_SECURITY_INFORMATION,
    GetTokenInformation, InitializeAcl, OBJECT_INHERIT_ACE, PROTECTED_DACL_SECURITY_INFORMATION,
    PSID, SE_DACL_PRESENT, SE_DACL_PROTECTED, SECURITY_DESCRIPTOR, SetFileSecurityW, TOKEN_QUERY,
    TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_ALL_ACCESS, FILE_FLAG_BACKUP_SEMANTICS};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use crate::file::FileStamp;

/// Creates `dir` and its missing parents, each with a protected DACL of one entry, the current
/// user's, which files made inside inherit. A directory that is there already is left as it is.
pub(in crate::file) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    match fs::create_dir(dir) {
        // Inheritable: the lock files, the pid file and every temp file made inside are
        // owner-only from the moment they exist.
        Ok(()) => set_owner_only(dir, OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens the session file for a read. No FIFO lives in a Windows directory; BACKUP_SEMANTICS
/// opens a directory too, so that one in the file's place is refused as not a file rather than
/// as "Access is denied". std shares read, write and delete, so this handle never stands in the
/// way of a writer whose rename Windows can do with POSIX semantics (NTFS, Windows 10 1607 and
/// later); the read still keeps it open as briefly as it can, for other filesystems and Wine.
pub(in crate::file) fn open_for_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
}

/// Sets a new temp file's DACL owner-only (protected), before the token is written: inside a
/// directory this crate made it is so already, but a directory the user chose may give it more.
pub(in crate::file) fn make_private(path: &Path) -> io::Result<()> {
    set_owner_only(path, 0)
}

/// The version of the open file `file`: its volume serial, index, size and last write.
pub(in crate::file) fn stamp_of(file: &File) -> io::Result<FileStamp> {
    let info = winapi_util::file::information(file)?;
    Ok(FileStamp {
        dev: info.volume_serial_number(),
        ino: info.file_index(),
        len: info.file_size(),
        mtime: info.last_write_time().unwrap_or(0) as i64,
        mtime_nsec: 0,
    })
}

/// The version of the file at `path`: `NotFound` if it is not there. As std's `metadata`: no
/// access asked (attributes only), and BACKUP_SEMANTICS so that a directory opens too.
pub(in crate::file) fn stamp_at(path: &Path) -> io::Result<FileStamp> {
    let file = OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    stamp_of(&file)
}

/// Nothing to do: Windows has no `fsync` of a directory (`FlushFileBuffers` takes files and
/// volumes). NTFS logs the rename in its journal: after a crash the file is the old one or the
/// new one, whole; the new one's bytes were flushed before the rename.
pub(in crate::file) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Whether `e` only means that another process has the file open: what `MoveFileEx` and
/// `DeleteFile` answer while another handle has it open without sharing its deletion (`type
/// token`, an editor, a virus scanner), or while a deletion is pending: "Access is denied" (5)
/// or a sharing violation (32). Wine answers 5.
pub(in crate::file) fn held_open(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(|code| code as u32),
        Some(ERROR_ACCESS_DENIED | ERROR_SHARING_VIOLATION)
    )
}

/// Room for a `TOKEN_USER` and the SID it points at (`SECURITY_MAX_SID_SIZE`, 68 bytes), and
/// for an ACL of one entry with that SID; 8-byte aligned, as `TOKEN_USER` (a pointer) must be.
type Buffer = [u64; 16];

/// The current user's `TOKEN_USER`, in a buffer of its own: on the heap, since the SID it
/// points at is in the buffer too.
pub(in crate::file) struct CurrentUser(Box<Buffer>);

impl CurrentUser {
    pub(in crate::file) fn sid(&self) -> PSID {
        // SAFETY: `current_user` filled the buffer with a TOKEN_USER, whose SID points inside it.
        unsafe { (*self.0.as_ptr().cast::<TOKEN_USER>()).User.Sid }
    }
}

fn check(ok: i32) -> io::Result<()> {
    match ok {
        0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

pub(in crate::file) fn current_user() -> io::Result<CurrentUser> {
    let mut user = CurrentUser(Box::new([0; 16]));
    let (mut raw, mut len): (HANDLE, u32) = (std::ptr::null_mut(), 0);
    // SAFETY: the pseudo-handle of this process needs no closing; `raw`, once the call says it
    // is open, is owned (and closed) by `token`; the buffer has the size passed.
    unsafe {
        check(OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut raw))?;
        let token = OwnedHandle::from_raw_handle(raw);
        let size = size_of::<Buffer>() as u32;
        let buffer = user.0.as_mut_ptr().cast();
        check(GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            buffer,
            size,
            &mut len,
        ))?;
    }
    Ok(user)
}

/// Sets `path`'s DACL to one entry, full control for the current user (inherited by what is
/// made inside when `flags` say so), protected from what its parent would pass down.
fn set_owner_only(path: &Path, flags: u32) -> io::Result<()> {
    let user = current_user()?;
    let mut acl_buffer: Buffer = [0; 16];
    let acl = acl_buffer.as_mut_ptr().cast::<ACL>();
    let name: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
    // An absolute descriptor holding the DACL alone, marked protected: what its parent would
    // pass down is not merged in. (What InitializeSecurityDescriptor, SetSecurityDescriptorDacl
    // and SetSecurityDescriptorControl make. SetFileSecurityW, not SetNamedSecurityInfoW: under
    // Wine 8 the latter left the parent's entries in, the protected flag notwithstanding.)
    let descriptor = SECURITY_DESCRIPTOR {
        Revision: 1, // SECURITY_DESCRIPTOR_REVISION
        Control: SE_DACL_PRESENT | SE_DACL_PROTECTED,
        Dacl: acl,
        ..Default::default()
    };
    let what = DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION;
    // SAFETY: `acl` points at a buffer of the size passed, 4-byte aligned, with room for the
    // header and one entry; `user.sid()` is a valid SID; `name` is NUL-terminated; the
    // descriptor and the ACL it points at outlive the calls.
    unsafe {
        check(InitializeAcl(acl, size_of::<Buffer>() as u32, ACL_REVISION))?;
        check(AddAccessAllowedAceEx(
            acl,
            ACL_REVISION,
            flags,
            FILE_ALL_ACCESS,
            user.sid(),
        ))?;
        check(SetFileSecurityW(
            name.as_ptr(),
            what,
            (&raw const descriptor).cast_mut().cast(),
        ))
    }
}
