//! Whether a file or directory is readable by its owner only, as `sys::create_private_dir` and
//! `sys::make_private` leave it: read back from the OS.

use std::io;
use std::path::Path;

/// Mode 0700 for a directory, 0600 for a file.
#[cfg(unix)]
pub(super) fn is_private(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    Ok(mode == if meta.is_dir() { 0o700 } else { 0o600 })
}

/// Whether `path`'s DACL lets no one but the current user in: each entry that allows anything
/// is the user's or LocalSystem's, and one is the user's. (Wine keeps no DACL: it maps the one
/// set to the Unix mode, and reads back one made from the mode, which always allows
/// LocalSystem and is never marked protected. On Windows the DACL read back is the user's
/// entry alone.)
#[cfg(windows)]
#[allow(unsafe_code)]
pub(super) fn is_private(path: &Path) -> io::Result<bool> {
    use std::mem::zeroed;
    use std::os::windows::ffi::OsStrExt as _;
    use std::ptr::null_mut;
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Security::Authorization::{GetNamedSecurityInfoW, SE_FILE_OBJECT};
    use windows_sys::Win32::Security::{
        ACCESS_ALLOWED_ACE, ACE_HEADER, ACL, ACL_SIZE_INFORMATION, AclSizeInformation,
        DACL_SECURITY_INFORMATION, EqualSid, GetAce, GetAclInformation, IsWellKnownSid,
        PSECURITY_DESCRIPTOR, PSID, WinLocalSystemSid,
    };
    let check = |ok: i32| match ok {
        0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    };
    /// ACCESS_ALLOWED_ACE_TYPE (in windows-sys' `SystemServices`).
    const ALLOWED: u8 = 0;
    let user = crate::file::sys::current_user()?;
    let name: Vec<u16> = path.as_os_str().encode_wide().chain([0]).collect();
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
            if unsafe { EqualSid(sid, user.sid()) } != 0 {
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
