use std::io;

use super::*;
use crate::error::{CorruptReason, Error};
use crate::store::{Swap, TokenStore as _};
use crate::token::Token;
use std::fs;
use std::time::{Duration, Instant};

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

mod private;

fn private(path: &Path) -> bool {
    private::is_private(path).unwrap()
}

#[test]
fn missing_empty_and_blank_mean_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    assert!(file.load().unwrap().token.is_none());
    for content in ["", "  \n", "\r\n\t "] {
        fs::write(file.path(), content).unwrap();
        assert!(file.load().unwrap().token.is_none(), "{content:?}");
    }
}

#[test]
fn reading_trims_white_space() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    fs::write(file.path(), " abc.def\r\n").unwrap();
    assert_eq!(file.load().unwrap().token, Some(token("abc.def")));
}

#[test]
fn write_creates_the_directory_and_the_file_owner_only() {
    // Unix: modes 0700 and 0600. Windows: a protected DACL with the user's entry alone.
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("a").join("b");
    let file = TokenFile::in_dir(&client);
    file.store(&token("one")).unwrap();
    assert!(private(client.parent().unwrap()));
    assert!(private(&client));
    assert!(private(file.path()));
    // The lock file holds nothing secret. On Windows it inherits the directory's DACL (Wine
    // has no inheritance: it gives the file its umask's mode).
    #[cfg(unix)]
    assert!(private(file.lock_path()));
    assert_eq!(fs::read_to_string(file.path()).unwrap(), "one\n");
    file.store(&token("two")).unwrap();
    assert!(private(file.path()));
    assert_eq!(file.load().unwrap().token, Some(token("two")));
}

#[test]
fn the_file_is_owner_only_in_a_directory_that_was_there() {
    // The directory is the user's (a temp dir: on Windows it passes down what its parent
    // gives, on Unix its mode is 0700 but the file's own mode must be 0600 anyway).
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    file.store(&token("one")).unwrap();
    assert!(private(file.path()));
}

#[cfg(unix)]
#[test]
fn replacing_keeps_the_file_0600_even_if_it_was_looser() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    file.store(&token("one")).unwrap();
    fs::set_permissions(file.path(), fs::Permissions::from_mode(0o644)).unwrap();
    file.store(&token("two")).unwrap();
    assert!(private(file.path()));
}

#[test]
fn bad_contents_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    type IsExpected = fn(&CorruptReason) -> bool;
    let cases: [(&[u8], IsExpected); 4] = [
        (b"has space", |r| matches!(r, CorruptReason::Malformed(_))),
        (b"\xff\xfe", |r| matches!(r, CorruptReason::NotUtf8)),
        (b"a\0b", |r| matches!(r, CorruptReason::Malformed(_))),
        (&[b'a'; TokenFile::MAX_LEN as usize + 1], |r| {
            matches!(r, CorruptReason::TooLarge { .. })
        }),
    ];
    for (content, expected) in cases {
        fs::write(file.path(), content).unwrap();
        match file.load().map(|stored| stored.token) {
            Err(Error::CorruptFile { path, reason }) => {
                assert_eq!(path, file.path());
                assert!(expected(&reason), "{reason:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    fs::remove_file(file.path()).unwrap();
    fs::create_dir(file.path()).unwrap();
    assert!(matches!(
        file.load().map(|stored| stored.token),
        Err(Error::CorruptFile {
            reason: CorruptReason::NotAFile,
            ..
        })
    ));
}

#[test]
fn errors_never_show_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    fs::write(file.path(), "s3cret with space").unwrap();
    let err = file.load().map(|stored| stored.token).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("s3cret"));
}

#[test]
fn swap_replaces_only_the_expected_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    // Expecting no token and finding none: written.
    assert!(matches!(
        file.swap(None, &token("one")).unwrap(),
        Swap::Replaced(_)
    ));
    // Expecting the wrong token: not written.
    assert!(matches!(
        file.swap(Some(&token("zero")), &token("two")).unwrap(),
        Swap::Lost(_)
    ));
    assert_eq!(file.load().unwrap().token, Some(token("one")));
    assert!(matches!(
        file.swap(Some(&token("one")), &token("two")).unwrap(),
        Swap::Replaced(_)
    ));
    assert_eq!(file.load().unwrap().token, Some(token("two")));
    // After a removal (a lock by another process) a refresh does not resurrect it.
    file.clear().unwrap();
    assert!(matches!(
        file.swap(Some(&token("two")), &token("three")).unwrap(),
        Swap::Lost(_)
    ));
    assert!(file.load().unwrap().token.is_none());
    assert!(!file.path().exists());
}

#[test]
fn removing_a_missing_file_is_ok_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    file.store(&token("one")).unwrap();
    file.clear().unwrap();
    assert!(!file.path().exists());
    // Twice more: `agent lock` run again, or by two terminals at once.
    file.clear().unwrap();
    file.clear().unwrap();
    // And a file that never existed, in a directory that never existed.
    let never = TokenFile::in_dir(dir.path().join("never"));
    never.clear().unwrap();
    never.clear().unwrap();
}

#[test]
fn a_removal_that_fails_is_an_error_and_the_path_stays() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    // unlink(2) of a directory fails (EISDIR), even for root (Windows: "Access is denied", which
    // must not be waited on as a reader would be), while the lock is taken as usual: what the caller must hear about is the failed unlink itself. (Permission
    // denied, the case users meet, needs a user permissions apply to; see
    // `tests/file_removal.rs`.)
    fs::create_dir(file.path()).unwrap();
    fs::write(file.path().join("inside"), "keep").unwrap();
    match file.clear() {
        Err(Error::WriteFile { path, .. }) => assert_eq!(path, file.path()),
        other => panic!("a failed unlink reported as {other:?}"),
    }
    assert!(file.path().join("inside").exists());
}

#[test]
fn a_lock_that_cannot_be_taken_names_the_session_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    // Opening a directory for writing fails (EISDIR), even for root.
    fs::create_dir(file.lock_path()).unwrap();
    match file.store(&token("one")) {
        Err(Error::WriteFile { path, source }) => {
            assert_eq!(path, file.path());
            // Windows says "Access is denied".
            #[cfg(unix)]
            assert_eq!(source.kind(), io::ErrorKind::IsADirectory);
            #[cfg(windows)]
            assert_eq!(source.kind(), io::ErrorKind::PermissionDenied);
        }
        other => panic!("a lock that cannot be taken reported as {other:?}"),
    }
    assert!(!file.path().exists());
}

#[test]
fn stale_temp_files_are_removed_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    fs::write(dir.path().join(".token.dead1234.tmp"), "x").unwrap();
    fs::write(dir.path().join("unrelated.tmp"), "x").unwrap();
    // A sibling session file's temp file (`token.bak`) is not ours to remove.
    fs::write(dir.path().join(".token.bak.a1b2.tmp"), "x").unwrap();
    file.store(&token("one")).unwrap();
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".token.bak.a1b2.tmp",
            "token",
            "token.lock",
            "unrelated.tmp"
        ]
    );
}

#[test]
fn a_reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    let tokens: Vec<Token> = (0..if cfg!(windows) { 200 } else { 1000 })
        .map(|i| token(&format!("{}{i}", "t".repeat(i % 300 + 1))))
        .collect();
    file.store(&tokens[0]).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    // The writer starts once the reader is reading; how many reads overlap the writes is
    // the scheduler's business, so the reader reads until the writer is done and once more.
    let reading = std::sync::Barrier::new(2);
    let reads = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            reading.wait();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let got = file
                    .load()
                    .unwrap()
                    .token
                    .expect("the file always holds a token");
                assert!(tokens.contains(&got));
                reads += 1;
                if finished {
                    break reads;
                }
            }
        });
        reading.wait();
        let mut waits: Vec<Duration> = tokens
            .iter()
            .map(|t| {
                let started = Instant::now();
                file.store(t).unwrap();
                started.elapsed()
            })
            .collect();
        done.store(true, std::sync::atomic::Ordering::Release);
        waits.sort();
        println!(
            "writes took: median {:?}, 99th {:?}, max {:?}",
            waits[waits.len() / 2],
            waits[waits.len() * 99 / 100],
            waits[waits.len() - 1]
        );
        reader.join().unwrap()
    });
    println!(
        "{reads} reads beside {} writes, each a whole token",
        tokens.len()
    );
    assert_eq!(file.load().unwrap().token, tokens.last().cloned());
}

/// Opens the session file as another program's reader would, until dropped. On Windows, without
/// sharing its deletion, as `type` and most programs open a file: Windows then refuses a rename
/// over it (Wine refuses it whatever the sharing).
fn hold_open(path: &Path) -> fs::File {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    std::os::windows::fs::OpenOptionsExt::share_mode(&mut options, 1 /* FILE_SHARE_READ */);
    options.open(path).unwrap()
}

#[test]
fn a_write_waits_for_a_reader_that_holds_the_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    file.store(&token("one")).unwrap();
    let reader = hold_open(file.path());
    let started = Instant::now();
    let (wrote, swapped) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let wrote = file.store(&token("two"));
            (wrote, file.swap(Some(&token("two")), &token("three")))
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(reader);
        writer.join().unwrap()
    });
    // On Windows without the retry: "Access is denied" (os error 5).
    wrote.unwrap();
    assert!(matches!(swapped.unwrap(), Swap::Replaced(_)));
    assert_eq!(file.load().unwrap().token, Some(token("three")));
    if cfg!(windows) {
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}

#[test]
fn a_reader_that_never_lets_go_is_a_lock_timeout_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path())
        .lock_wait(Duration::from_millis(300))
        .refresh_lock_wait(Duration::from_millis(100));
    file.store(&token("one")).unwrap();
    let _reader = hold_open(file.path());
    let stored = file.store(&token("two"));
    let swapped = file.swap(Some(&token("one")), &token("three"));
    let cleared = file.clear();
    if cfg!(windows) {
        for (result, wait) in [
            (stored.map(|_| ()), 300),
            (swapped.map(|_| ()), 100),
            (cleared, 300),
        ] {
            match result {
                Err(Error::Locked { path, waited }) => {
                    assert_eq!(path, file.path());
                    assert!(waited >= Duration::from_millis(wait), "{waited:?}");
                }
                other => panic!("a reader in the way reported as {other:?}"),
            }
        }
        // Nothing written, no temp file left.
        assert_eq!(fs::read_to_string(file.path()).unwrap(), "one\n");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "token, token.lock"
        );
    } else {
        stored.unwrap();
        assert!(matches!(swapped.unwrap(), Swap::Lost(_)));
        cleared.unwrap();
    }
}

#[test]
fn a_waiter_for_the_reauthentication_lock_reads_the_holders_pid() {
    // On Windows the lock is mandatory: a pid written into the lock file could not be read by
    // the waiter (another handle, as another process's would be). Wine does not enforce
    // `LockFileEx` against reads, so the pid's place is checked too: beside the lock, not in it.
    let dir = tempfile::tempdir().unwrap();
    let holder = TokenFile::in_dir(dir.path());
    let soon = || std::time::Instant::now() + Duration::from_millis(50);
    let lock = holder.reauth_lock().unwrap();
    let Taken::Held(_held) = lock.take(soon(), || true, |_| {}).unwrap() else {
        panic!("not taken");
    };
    let mut told = None;
    let taken = lock.take(soon(), || true, |pid| told = Some(pid)).unwrap();
    assert!(matches!(taken, Taken::TimedOut(_)), "{taken:?}");
    assert_eq!(told, Some(Some(std::process::id())));
    let pid = std::process::id().to_string();
    assert_eq!(
        fs::read_to_string(holder.reauth_lock().unwrap().pid_path()).unwrap(),
        pid
    );
    // Windows refuses the read of a locked file; elsewhere it is empty.
    assert!(fs::read(lock.path()).map_or(true, |bytes| bytes.is_empty()));
}

/// The version a write returns is the one `version` then reads: a session that wrote it takes
/// no later look at the file for another process's change. (Under Wine the temp file's handle
/// reported a volume serial of 0, so the two never matched.)
#[test]
fn a_writes_version_is_the_one_version_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    let stored = file.store(&token("a")).unwrap();
    assert_eq!(file.version().unwrap(), Some(stored));
    assert_eq!(file.load().unwrap().version, Some(stored));
    let Swap::Replaced(swapped) = file.swap(Some(&token("a")), &token("b")).unwrap() else {
        panic!("the file held the token expected");
    };
    assert_eq!(file.version().unwrap(), Some(swapped));
    assert_eq!(file.load().unwrap().version, Some(swapped));
}
