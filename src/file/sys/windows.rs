//! Windows: the owner-only DACL (what modes 0700 and 0600 are on Unix), a file's volume serial
//! and index (its device and inode), and what a rename refused for a reader looks like.
//!
//! The crate's only `unsafe`: std has no call for a file's security descriptor, and has its
//! file index only behind an unstable feature. Each block calls one Win32 function with
//! pointers to buffers it owns, sized as the function asks, and checks the result.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::windows::ffi::OsStrExt as _;
use std::os::windows::fs::OpenOptionsExt as _;
use std::os::windows::io::{AsRawHandle as _, FromRawHandle as _, OwnedHandle};
use std::path::Path;
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, HANDLE};
use windows_sys::Win32::Security::{
    ACCESS_ALLOWED_ACE, ACL, ACL_REVISION, AddAccessAllowedAceEx, CONTAINER_INHERIT_ACE, CopySid,
    DACL_SECURITY_INFORMATION, GetLengthSid, GetTokenInformation, InitializeAcl,
    InitializeSecurityDescriptor, OBJECT_INHERIT_ACE, PROTECTED_DACL_SECURITY_INFORMATION, PSID,
    SE_DACL_PROTECTED, SECURITY_DESCRIPTOR, SetFileSecurityW, SetSecurityDescriptorControl,
    SetSecurityDescriptorDacl, TOKEN_QUERY, TOKEN_USER, TokenUser,
};

/// `SECURITY_DESCRIPTOR_REVISION` (in windows-sys' `SystemServices`, a feature for one number).
const SECURITY_DESCRIPTOR_REVISION: u32 = 1;
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ALL_ACCESS, FILE_FLAG_BACKUP_SEMANTICS,
    GetFileInformationByHandle,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use crate::file::FileStamp;

pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
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

pub(super) fn private_mode(_options: &mut OpenOptions) {
    // The directory's inheritable entry makes the file owner-only as it is created.
}

pub(super) fn open_for_read(path: &Path) -> io::Result<File> {
    // No FIFO lives in a Windows directory. BACKUP_SEMANTICS opens a directory too, so that one
    // in the file's place is refused as not a file rather than as "Access is denied".
    // std shares read, write and delete, so this handle never stands in the way of a writer
    // whose rename Windows can do with POSIX semantics (NTFS, Windows 10 1607 and later); the
    // read still keeps it open as briefly as it can, for the other filesystems and Wine.
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
}

pub(super) fn make_private(path: &Path) -> io::Result<()> {
    // Inside a directory this crate made, the file is owner-only already; a directory the user
    // chose may give it more. Set before the token is written.
    set_owner_only(path, 0)
}

pub(super) fn stamp_of(file: &File) -> io::Result<FileStamp> {
    // SAFETY: the handle is `file`'s, open for this call; `info` is a plain struct it fills.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { zeroed() };
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle() as HANDLE, &mut info) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |high: u32, low: u32| (u64::from(high) << 32) | u64::from(low);
    Ok(FileStamp {
        dev: u64::from(info.dwVolumeSerialNumber),
        ino: join(info.nFileIndexHigh, info.nFileIndexLow),
        len: join(info.nFileSizeHigh, info.nFileSizeLow),
        mtime: join(
            info.ftLastWriteTime.dwHighDateTime,
            info.ftLastWriteTime.dwLowDateTime,
        ) as i64,
        mtime_nsec: 0,
    })
}

pub(super) fn stamp_at(path: &Path) -> io::Result<FileStamp> {
    // As std's `metadata`: no access asked (attributes only), and BACKUP_SEMANTICS so that a
    // directory opens too.
    let file = OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    stamp_of(&file)
}

pub(super) fn identity(path: &Path) -> Option<(u64, u64)> {
    stamp_at(path).ok().map(|stamp| (stamp.dev, stamp.ino))
}

pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Windows has no `fsync` of a directory (`FlushFileBuffers` takes files and volumes). NTFS
    // logs the rename in its journal: after a crash the file is the old one or the new one,
    // whole; the new one's bytes were flushed before the rename.
    Ok(())
}

pub(super) fn held_open(e: &io::Error) -> bool {
    // What `MoveFileEx` and `DeleteFile` answer while another handle has the file open without
    // sharing its deletion (`type token`, an editor, a virus scanner), or while a deletion is
    // pending: "Access is denied" (5) or a sharing violation (32). Wine answers 5.
    matches!(
        e.raw_os_error().map(|code| code as u32),
        Some(ERROR_ACCESS_DENIED | ERROR_SHARING_VIOLATION)
    )
}

/// The current user's SID, in a buffer of its own (4-byte aligned, as a SID must be).
struct Sid(Vec<u32>);

impl Sid {
    fn as_psid(&self) -> PSID {
        self.0.as_ptr() as PSID
    }
}

fn check(ok: i32) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn current_user() -> io::Result<Sid> {
    let mut raw: HANDLE = null_mut();
    // SAFETY: the pseudo-handle of this process needs no closing; `raw` receives a new handle.
    check(unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut raw) })?;
    // SAFETY: `raw` is the token handle just opened, owned (and closed) from here on.
    let token = unsafe { OwnedHandle::from_raw_handle(raw) };
    let token = token.as_raw_handle() as HANDLE;
    let mut len = 0u32;
    // SAFETY: a null buffer of length 0 asks only for the length the answer needs.
    unsafe { GetTokenInformation(token, TokenUser, null_mut(), 0, &mut len) };
    if len == 0 {
        return Err(io::Error::last_os_error());
    }
    // 8-byte aligned: TOKEN_USER holds a pointer.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` has at least `len` bytes, as the call asked.
    check(unsafe {
        GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), len, &mut len)
    })?;
    // SAFETY: the call filled `buf` with a TOKEN_USER, whose SID points inside `buf`.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    // SAFETY: `sid` is a valid SID (the token's), alive as long as `buf`.
    let sid_len = unsafe { GetLengthSid(sid) };
    let mut copy = vec![0u32; (sid_len as usize).div_ceil(4)];
    // SAFETY: `copy` has room for `sid_len` bytes.
    check(unsafe { CopySid(sid_len, copy.as_mut_ptr().cast(), sid) })?;
    Ok(Sid(copy))
}

fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain([0]).collect()
}

/// Sets `path`'s DACL to one entry, full control for the current user (inherited by what is
/// made inside when `flags` say so), protected from what its parent would pass down.
fn set_owner_only(path: &Path, flags: u32) -> io::Result<()> {
    let user = current_user()?;
    // SAFETY: `user` holds a valid SID.
    let sid_len = unsafe { GetLengthSid(user.as_psid()) } as usize;
    // An ACE's SID starts at its last field (`SidStart`, a u32) and runs on.
    let ace_len = size_of::<ACCESS_ALLOWED_ACE>() - size_of::<u32>() + sid_len;
    let acl_len = (size_of::<ACL>() + ace_len).next_multiple_of(4);
    let mut buf = vec![0u32; acl_len / 4];
    let acl = buf.as_mut_ptr().cast::<ACL>();
    // SAFETY: `buf` has `acl_len` bytes, 4-byte aligned, room for the header and one entry.
    check(unsafe { InitializeAcl(acl, acl_len as u32, ACL_REVISION) })?;
    // SAFETY: `acl` was just initialised with room for this entry; `user` is a valid SID.
    check(unsafe {
        AddAccessAllowedAceEx(acl, ACL_REVISION, flags, FILE_ALL_ACCESS, user.as_psid())
    })?;
    // An absolute descriptor holding the DACL alone, marked protected: what its parent would
    // pass down is not merged in. (SetFileSecurityW, not SetNamedSecurityInfoW: under Wine 8 the
    // latter left the parent's entries in, the protected flag notwithstanding.)
    // SAFETY: a plain struct, initialised by the call below.
    let mut descriptor: SECURITY_DESCRIPTOR = unsafe { zeroed() };
    let sd = (&mut descriptor as *mut SECURITY_DESCRIPTOR).cast();
    // SAFETY: `sd` points at a SECURITY_DESCRIPTOR of this function's; `acl` outlives it.
    check(unsafe { InitializeSecurityDescriptor(sd, SECURITY_DESCRIPTOR_REVISION) })?;
    check(unsafe { SetSecurityDescriptorDacl(sd, 1, acl, 0) })?;
    check(unsafe { SetSecurityDescriptorControl(sd, SE_DACL_PROTECTED, SE_DACL_PROTECTED) })?;
    let name = wide(path);
    // SAFETY: `name` is NUL-terminated; `sd` is the descriptor just made.
    let status = unsafe {
        SetFileSecurityW(
            name.as_ptr(),
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            sd,
        )
    };
    check(status)
}

/// Whether `path`'s DACL lets no one but the current user in: each entry that allows anything
/// is the user's or LocalSystem's, and one is the user's. (Wine keeps no DACL: it maps the one
/// set to the Unix mode, and reads back one made from the mode, which always allows
/// LocalSystem and is never marked protected. On Windows the DACL read back is the user's
/// entry alone.)
#[cfg(test)]
pub(super) fn is_private(path: &Path) -> io::Result<bool> {
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{GetNamedSecurityInfoW, SE_FILE_OBJECT};
    use windows_sys::Win32::Security::{
        ACE_HEADER, ACL_SIZE_INFORMATION, AclSizeInformation, EqualSid, GetAce, GetAclInformation,
        IsWellKnownSid, PSECURITY_DESCRIPTOR, WinLocalSystemSid,
    };
    /// ACCESS_ALLOWED_ACE_TYPE (in windows-sys' `SystemServices`).
    const ALLOWED: u8 = 0;
    let user = current_user()?;
    let name = wide(path);
    let mut dacl: *mut ACL = null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: `name` is NUL-terminated; `dacl` points into `descriptor`, freed below.
    let status = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            &mut dacl,
            null_mut(),
            &mut descriptor,
        )
    };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    let private = (|| {
        if dacl.is_null() {
            // No DACL: everyone may.
            return Ok(false);
        }
        // SAFETY: `info` is a plain struct of the size passed.
        let mut info: ACL_SIZE_INFORMATION = unsafe { zeroed() };
        check(unsafe {
            GetAclInformation(
                dacl,
                (&mut info as *mut ACL_SIZE_INFORMATION).cast(),
                size_of::<ACL_SIZE_INFORMATION>() as u32,
                AclSizeInformation,
            )
        })?;
        let mut users = 0;
        for i in 0..info.AceCount {
            let mut ace: *mut core::ffi::c_void = null_mut();
            // SAFETY: entry `i` exists; `ace` points into `dacl`.
            check(unsafe { GetAce(dacl, i, &mut ace) })?;
            // SAFETY: every entry starts with its header.
            if unsafe { (*ace.cast::<ACE_HEADER>()).AceType } != ALLOWED {
                continue;
            }
            let ace = ace.cast::<ACCESS_ALLOWED_ACE>();
            // SAFETY: an allowing entry's SID starts at `SidStart`.
            let sid: PSID = unsafe { (&raw mut (*ace).SidStart).cast() };
            // SAFETY: `sid` and the user's are valid SIDs.
            if unsafe { EqualSid(sid, user.as_psid()) } != 0 {
                users += 1;
            } else if unsafe { IsWellKnownSid(sid, WinLocalSystemSid) } == 0 {
                return Ok(false);
            }
        }
        Ok(users > 0)
    })();
    // SAFETY: `descriptor` was allocated by GetNamedSecurityInfoW for the caller to free.
    unsafe { LocalFree(descriptor) };
    private
}
