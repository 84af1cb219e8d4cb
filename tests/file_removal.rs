//! Removing the session file (`agent lock`, `Session::clear`): a removal the filesystem refuses
//! is an error, and the token stays on disk where the caller can see it; removing a file that
//! is already gone is not an error, however many times it is done.
//!
//! The refused removal needs `unlink(2)` to fail while the lock file can still be opened. Run
//! as a user, a directory without write permission does that. Run as root, permission bits do
//! not stop anything, so the directory is made append-only (`chattr +a`: entries may be added,
//! none removed), which binds root too; on a filesystem without that attribute the case is
//! skipped, saying why. Either way the unlink itself fails with "permission denied" (EACCES or
//! EPERM), after the lock was taken: what is tested is that `remove` reports that failure.
// Unix only: makes the file undeletable with Linux's append-only flag (ioctl) (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::fs;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use tower_agent_session::store::TokenStore as _;

use tower_agent_session::{Error, Session, Token, TokenFile};

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

fn quiet_session(file: &TokenFile) -> Session {
    Session::builder(tower_agent_session::TokenFile::new(file.path()))
        .watch(tower_agent_session::Watch::Off)
        .build()
}

fn denied(error: &Error) -> bool {
    matches!(error, Error::WriteFile { source, .. }
        if source.kind() == std::io::ErrorKind::PermissionDenied)
}

/// `FS_APPEND_FL` from `<linux/fs.h>`: only appends to a file, only new entries in a directory.
const FS_APPEND_FL: libc::c_int = 0x0000_0020;

/// Makes `dir` refuse every unlink while the guard lives; undone when dropped, so that the temp
/// directory can be removed even if the test fails.
enum Refusal {
    AppendOnly(PathBuf),
    ReadOnlyMode(PathBuf),
}

impl Refusal {
    fn on(dir: &Path) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o500)).unwrap();
            return Ok(Self::ReadOnlyMode(dir.to_owned()));
        }
        set_append_only(dir, true)?;
        Ok(Self::AppendOnly(dir.to_owned()))
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        match self {
            Self::AppendOnly(dir) => {
                let _ = set_append_only(dir, false);
            }
            Self::ReadOnlyMode(dir) => {
                let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
            }
        }
    }
}

fn set_append_only(dir: &Path, on: bool) -> Result<(), String> {
    let handle = fs::File::open(dir).map_err(|e| e.to_string())?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one `int` through the pointer, which
    // points at a live `c_int`; the descriptor is open for the whole call.
    unsafe {
        if libc::ioctl(handle.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 {
            return Err(format!(
                "FS_IOC_GETFLAGS: {}",
                std::io::Error::last_os_error()
            ));
        }
        if on {
            flags |= FS_APPEND_FL;
        } else {
            flags &= !FS_APPEND_FL;
        }
        if libc::ioctl(handle.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) != 0 {
            return Err(format!(
                "FS_IOC_SETFLAGS: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_refused_removal_is_an_error_and_the_token_stays_on_disk() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("client");
    let file = TokenFile::in_dir(&dir);
    let good = token("good.token");
    // Creates the directory, the lock file and the session file.
    file.store(&good).unwrap();
    let session = quiet_session(&file);
    session.start().await.unwrap();

    let refusal = match Refusal::on(&dir) {
        Ok(refusal) => refusal,
        Err(why) => {
            println!("SKIPPED a refused removal: cannot make {dir:?} append-only: {why}");
            return;
        }
    };
    // The control: the directory really refuses the unlink, so a success below is a lie.
    assert!(
        fs::remove_file(file.path()).is_err(),
        "the directory does not refuse unlinks; the test would prove nothing"
    );

    let removed = file.clear();
    assert!(
        matches!(&removed, Err(e) if denied(e)),
        "a refused unlink reported as {removed:?}"
    );
    assert_eq!(
        file.load().unwrap().token,
        Some(good.clone()),
        "the token is gone"
    );

    let cleared = session.clear().await;
    assert!(
        matches!(&cleared, Err(e) if denied(e)),
        "a refused unlink reported as {cleared:?}"
    );
    assert_eq!(
        file.load().unwrap().token,
        Some(good.clone()),
        "the token is gone after all"
    );

    // Once the directory allows it, the same calls succeed.
    drop(refusal);
    session.clear().await.unwrap();
    assert!(!file.path().exists());
}

#[tokio::test]
async fn removing_twice_in_a_row_is_ok_both_times() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    file.store(&token("t0")).unwrap();
    file.clear().unwrap();
    file.clear().unwrap();
    assert!(!file.path().exists());

    let session = quiet_session(&file);
    session.start_with_token(token("t1")).await.unwrap();
    session.clear().await.unwrap();
    // `agent lock` run twice, or in two terminals at once.
    session.clear().await.unwrap();
    assert!(!file.path().exists());
    assert_eq!(session.token(), None);

    // A session that never had a file.
    let never = quiet_session(&TokenFile::in_dir(dir.path().join("never")));
    never.clear().await.unwrap();
    never.clear().await.unwrap();
}
