//! Hostile session files: whatever sits at the session file's path, reading it gives a token,
//! "no token" or a typed error; nothing panics or hangs; and no write of a refresh replaces a
//! file it could not read, so a good token is never replaced by a bad one.
//!
//! Permission cases need a user that permissions apply to: run as root, they run in a child
//! process of this test binary under uid/gid 65534 (`nobody`). The full-disk and read-only
//! cases mount a 64 KiB tmpfs, which needs root; they are skipped, saying why, otherwise.
// Unix only: FIFOs, mounts, euid and Unix modes (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::convert::Infallible;
use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use http::{HeaderValue, Request, Response, header};
use tower::{Layer as _, ServiceExt as _};
use tower_agent_session::{
    CorruptReason, Error, MalformedToken, Session, SessionLayer, Token, TokenFile,
};

mod reliability_common;
use reliability_common::{ChildProcess, child_role, fail, param, say, temp_files};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";
/// The most a test waits for a read it expects to return at once. Only a bound on a hang.
const HANG_BOUND: Duration = Duration::from_secs(20);

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

/// A session that looks at its file only when the test makes it.
fn quiet_session(path: &Path) -> Session {
    Session::builder(tower_agent_session::TokenFile::new(path))
        .watch(tower_agent_session::Watch::Off)
        .build()
}

/// One call through the session layer to an agent that answers with `refresh`. Returns the
/// `authorization` the agent received.
async fn refreshing_call(session: &Session, refresh: &Token) -> Option<HeaderValue> {
    let sent = Arc::new(Mutex::new(None));
    let seen = sent.clone();
    let reply = refresh.header_value();
    let agent = tower::service_fn(move |request: Request<()>| {
        *seen.lock().unwrap() = request.headers().get(header::AUTHORIZATION).cloned();
        let reply = reply.clone();
        async move {
            let mut response = Response::new(());
            response.headers_mut().insert(header::AUTHORIZATION, reply);
            Ok::<_, Infallible>(response)
        }
    });
    let response = SessionLayer::new(session.clone())
        .layer(agent)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the call's result is handed over");
    sent.lock().unwrap().clone()
}

fn bearer(token: &Token) -> Option<HeaderValue> {
    Some(token.header_value())
}

fn corrupt(result: Result<Option<Token>, Error>) -> CorruptReason {
    match result {
        Err(Error::CorruptFile { reason, .. }) => reason,
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    NoToken,
    Token(&'static str),
    Corrupt(fn(&CorruptReason) -> bool),
}

fn malformed(r: &CorruptReason) -> bool {
    matches!(r, CorruptReason::Malformed(_))
}

fn too_long(r: &CorruptReason) -> bool {
    matches!(
        r,
        CorruptReason::Malformed(MalformedToken::TooLong { len }) if *len == tower_agent_session::Token::MAX_LEN + 1
    )
}

fn not_utf8(r: &CorruptReason) -> bool {
    matches!(r, CorruptReason::NotUtf8)
}

fn too_large(r: &CorruptReason) -> bool {
    matches!(r, CorruptReason::TooLarge { limit, .. } if *limit == tower_agent_session::TokenFile::MAX_LEN)
}

fn contents() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let longest = "a".repeat(tower_agent_session::Token::MAX_LEN);
    let mut at_the_cap = longest.clone().into_bytes();
    at_the_cap.resize(tower_agent_session::TokenFile::MAX_LEN as usize, b' ');
    let mut over_the_cap = at_the_cap.clone();
    over_the_cap.push(b'\n');
    vec![
        ("empty", Vec::new(), Expect::NoToken),
        (
            "whitespace",
            b" \t\n\r\n \x0b\x0c".to_vec(),
            Expect::NoToken,
        ),
        (
            "LF-terminated",
            b"tok.lf\n".to_vec(),
            Expect::Token("tok.lf"),
        ),
        (
            "CRLF-terminated",
            b"tok.crlf\r\n".to_vec(),
            Expect::Token("tok.crlf"),
        ),
        (
            "surrounded by blanks",
            b"\r\n\t tok.ws \t\r\n".to_vec(),
            Expect::Token("tok.ws"),
        ),
        (
            "binary controls",
            b"\x00\x01\x02tok\x7f".to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "NUL inside",
            b"tok\0en".to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "a space inside",
            b"tok en".to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "two lines",
            b"tok.one\ntok.two\n".to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "non-ASCII UTF-8",
            "tök".as_bytes().to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "a UTF-8 BOM",
            b"\xef\xbb\xbftok".to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "non-UTF-8",
            b"tok\xff\xfe".to_vec(),
            Expect::Corrupt(not_utf8),
        ),
        (
            "a PNG header",
            b"\x89PNG\r\n\x1a\n".to_vec(),
            Expect::Corrupt(not_utf8),
        ),
        (
            "a JSON token",
            br#"{"token":"abc"}"#.to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "Bearer-prefixed",
            b"Bearer tok".to_vec(),
            Expect::Corrupt(malformed),
        ),
        (
            "the longest token",
            longest.clone().into_bytes(),
            Expect::Token("longest"),
        ),
        (
            "a token one byte too long",
            format!("{longest}a").into_bytes(),
            Expect::Corrupt(too_long),
        ),
        (
            "exactly the cap, blank-padded",
            at_the_cap,
            Expect::Token("longest"),
        ),
        (
            "one byte over the cap",
            over_the_cap,
            Expect::Corrupt(too_large),
        ),
    ]
}

fn expected_token(name: &'static str) -> Token {
    match name {
        "longest" => token(&"a".repeat(tower_agent_session::Token::MAX_LEN)),
        other => token(other),
    }
}

/// Every content: `TokenStore::load` and `Session::start` say the same; `start` on a bad file
/// keeps the session's token; a refresh never writes over the file; an explicit write does.
#[tokio::test]
async fn hostile_contents_give_no_token_or_a_typed_error_and_are_never_refreshed_over() {
    let good = token("good.token");
    let mut checked = 0;
    for (name, bytes, expect) in contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::in_dir(dir.path());
        let session = quiet_session(file.path());
        session.start_with_token(good.clone()).await.unwrap();
        // Another program puts this at the path.
        fs::write(file.path(), &bytes).unwrap();

        let read = file.load().map(|stored| stored.token);
        let started = session.start().await;
        match expect {
            Expect::NoToken => {
                assert_eq!(read.unwrap(), None, "{name}");
                started.unwrap();
                assert_eq!(session.token(), None, "{name}: a blank file is no token");
            }
            Expect::Token(t) => {
                assert_eq!(read.unwrap(), Some(expected_token(t)), "{name}");
                started.unwrap();
                assert_eq!(session.token(), Some(expected_token(t)), "{name}");
            }
            Expect::Corrupt(is) => {
                let reason = corrupt(read);
                assert!(is(&reason), "{name}: {reason:?}");
                assert_eq!(corrupt(started.map(|()| None)), reason, "{name}");
                assert_eq!(
                    session.token(),
                    Some(good.clone()),
                    "{name}: a bad file leaves the session as it was"
                );
                assert_eq!(
                    Error::CorruptFile {
                        path: file.path().to_owned(),
                        reason
                    }
                    .exit_code(),
                    65
                );
            }
        }

        // A refresh is written only over the token it refreshes: never over a bad file (the
        // session still holds the good token the file had before), nor after a blank file
        // (no token, so no refresh either).
        let before = session.token();
        let refreshed = token("refreshed.token");
        let sent = refreshing_call(&session, &refreshed).await;
        assert_eq!(sent, before.as_ref().and_then(bearer), "{name}");
        let flushed = session.flush().await;
        match expect {
            Expect::Corrupt(_) => {
                assert!(
                    matches!(flushed, Err(Error::CorruptFile { .. })),
                    "{name}: {flushed:?}"
                );
                assert_eq!(
                    fs::read(file.path()).unwrap(),
                    bytes,
                    "{name}: refreshed over"
                );
            }
            Expect::NoToken => {
                flushed.unwrap();
                assert_eq!(
                    fs::read(file.path()).unwrap(),
                    bytes,
                    "{name}: refreshed over"
                );
            }
            Expect::Token(_) => {
                flushed.unwrap();
                assert_eq!(file.load().unwrap().token, Some(refreshed), "{name}");
            }
        }

        // An explicit write (an unlock) replaces it.
        session.start_with_token(good.clone()).await.unwrap();
        assert_eq!(file.load().unwrap().token, Some(good.clone()), "{name}");
        assert!(temp_files(dir.path()).is_empty(), "{name}");
        checked += 1;
    }
    println!(
        "hostile contents: {checked} kinds of content read as a token, no token, or a typed \
         CorruptFile error; none refreshed over; each replaced by an explicit write"
    );
}

/// This thread's bytes read so far (`rchar` of /proc/thread-self/io): every `read(2)`,
/// whatever the file. Other threads of the test do not count.
fn bytes_read_by_this_thread() -> u64 {
    let io = fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("an rchar line")
}

#[tokio::test]
async fn a_one_gib_sparse_file_is_refused_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    fs::File::create(file.path())
        .unwrap()
        .set_len(1 << 30)
        .unwrap();

    let before = bytes_read_by_this_thread();
    let result = file.load().map(|stored| stored.token);
    let read = bytes_read_by_this_thread() - before;
    assert_eq!(
        corrupt(result),
        CorruptReason::TooLarge {
            len: 1 << 30,
            limit: tower_agent_session::TokenFile::MAX_LEN
        }
    );
    // The /proc file itself is a few hundred bytes; the session file would be 1 GiB.
    assert!(read < 64 * 1024, "{read} bytes read to refuse it");

    let session = quiet_session(file.path());
    assert!(matches!(
        session.start().await,
        Err(Error::CorruptFile {
            reason: CorruptReason::TooLarge { .. },
            ..
        })
    ));
    assert!(matches!(
        file.swap(None, &token("new")),
        Err(Error::CorruptFile { .. })
    ));
    assert_eq!(fs::metadata(file.path()).unwrap().len(), 1 << 30);
    println!("1 GiB sparse file: refused as TooLarge after {read} bytes of read(2) on the thread");
}

#[tokio::test]
async fn a_directory_at_the_path_is_not_a_file_and_cannot_be_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    fs::create_dir(file.path()).unwrap();
    fs::write(file.path().join("inside"), "keep").unwrap();
    assert_eq!(
        corrupt(file.load().map(|stored| stored.token)),
        CorruptReason::NotAFile
    );
    let session = quiet_session(file.path());
    assert!(matches!(
        session.start().await,
        Err(Error::CorruptFile {
            reason: CorruptReason::NotAFile,
            ..
        })
    ));
    assert!(matches!(
        file.swap(None, &token("new")),
        Err(Error::CorruptFile {
            reason: CorruptReason::NotAFile,
            ..
        })
    ));
    let written = session.start_with_token(token("new")).await;
    assert!(
        matches!(written, Err(Error::WriteFile { .. })),
        "{written:?}"
    );
    assert_eq!(
        fs::read_to_string(file.path().join("inside")).unwrap(),
        "keep"
    );
    assert!(
        temp_files(dir.path()).is_empty(),
        "the failed write left its temp file"
    );
}

#[tokio::test]
async fn a_dangling_symlink_is_no_token_and_a_write_replaces_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    let nowhere = dir.path().join("nowhere");
    std::os::unix::fs::symlink(&nowhere, file.path()).unwrap();
    assert_eq!(file.load().unwrap().token, None);
    let session = quiet_session(file.path());
    session.start().await.unwrap();
    assert_eq!(session.token(), None);
    session.start_with_token(token("new")).await.unwrap();
    assert!(fs::symlink_metadata(file.path()).unwrap().is_file());
    assert!(!nowhere.exists(), "the write went through the link");
    assert_eq!(file.load().unwrap().token, Some(token("new")));
}

/// A session file that is a symlink to `target`, which holds `target.token`.
fn linked(dir: &Path) -> (TokenFile, PathBuf) {
    let elsewhere = tempfile::tempdir().unwrap().keep();
    let target = elsewhere.join("their-token");
    fs::write(&target, "target.token\n").unwrap();
    let file = TokenFile::in_dir(dir);
    std::os::unix::fs::symlink(&target, file.path()).unwrap();
    (file, target)
}

#[tokio::test]
async fn a_symlink_is_read_through_and_writes_replace_the_link_not_its_target() {
    // An explicit write.
    let dir = tempfile::tempdir().unwrap();
    let (file, target) = linked(dir.path());
    assert_eq!(file.load().unwrap().token, Some(token("target.token")));
    file.store(&token("explicit")).unwrap();
    assert!(fs::symlink_metadata(file.path()).unwrap().is_file());
    assert_eq!(fs::read_to_string(&target).unwrap(), "target.token\n");
    assert_eq!(file.load().unwrap().token, Some(token("explicit")));
    fs::remove_dir_all(target.parent().unwrap()).unwrap();

    // A refresh, through the layer.
    let dir = tempfile::tempdir().unwrap();
    let (file, target) = linked(dir.path());
    let session = quiet_session(file.path());
    session.start().await.unwrap();
    assert_eq!(session.token(), Some(token("target.token")));
    let sent = refreshing_call(&session, &token("refreshed")).await;
    assert_eq!(sent, bearer(&token("target.token")));
    session.flush().await.unwrap();
    assert_eq!(session.stats().writes, 1);
    assert!(fs::symlink_metadata(file.path()).unwrap().is_file());
    assert_eq!(fs::read_to_string(&target).unwrap(), "target.token\n");
    assert_eq!(file.load().unwrap().token, Some(token("refreshed")));
    assert_eq!(
        fs::metadata(file.path()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::remove_dir_all(target.parent().unwrap()).unwrap();
}

/// Runs `work` on its own thread; a FIFO open that blocks would otherwise hang the test. If it
/// does not return in [`HANG_BOUND`], the FIFO is opened for reading and writing (which frees a
/// reader or a writer waiting for the other end) and the test fails.
fn without_hanging<T: Send + 'static>(
    fifo: &Path,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(HANG_BOUND) {
        Ok(result) => result,
        Err(_) => {
            let path = CString::new(fifo.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string; the descriptor is closed at once, which gives a
            // blocked reader its end of file.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            panic!("{what} on a FIFO hung")
        }
    }
}

#[test]
fn a_fifo_is_not_a_file_and_nothing_waits_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    let path = CString::new(file.path().as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");

    let reader = file.clone();
    let read = without_hanging(file.path(), "TokenFile::load", move || {
        reader.load().map(|stored| stored.token)
    });
    assert_eq!(corrupt(read), CorruptReason::NotAFile);

    let session = quiet_session(file.path());
    let starting = session.clone();
    let started = without_hanging(file.path(), "Session::start", move || {
        reliability_common::small_runtime().block_on(starting.start())
    });
    assert!(matches!(
        started,
        Err(Error::CorruptFile {
            reason: CorruptReason::NotAFile,
            ..
        })
    ));
    let refresher = file.clone();
    let refreshed = without_hanging(file.path(), "a refresh write", move || {
        refresher.swap(None, &token("refreshed"))
    });
    assert!(matches!(refreshed, Err(Error::CorruptFile { .. })));
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::metadata(file.path()).unwrap().file_type()
    ));

    // An unlock replaces it with a file (never opening it, so never waiting on it).
    let writer = file.clone();
    without_hanging(file.path(), "an explicit write", move || {
        writer.store(&token("unlocked"))
    })
    .unwrap();
    assert_eq!(file.load().unwrap().token, Some(token("unlocked")));
}

// ---- permissions ------------------------------------------------------------------------

const NOBODY: u32 = 65534;

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "unprivileged" => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                fail("still root");
            }
            let cases = permission_cases(&PathBuf::from(param("DIR")));
            for case in cases {
                say(format_args!("ok {case}"));
            }
            say("done");
            std::process::exit(0)
        }
        other => fail(format_args!("unknown role {other}")),
    }
}

fn denied(error: &Error) -> bool {
    let source = match error {
        Error::ReadFile { source, .. } | Error::WriteFile { source, .. } => source,
        _ => return false,
    };
    source.kind() == std::io::ErrorKind::PermissionDenied && error.exit_code() == 77
}

/// The permission cases, as a user that permissions apply to. Panics on a failure; returns
/// the names of the cases checked.
fn permission_cases(base: &Path) -> Vec<&'static str> {
    let rt = reliability_common::small_runtime();
    let good = token("good.token");
    let mut cases = Vec::new();

    // A session file nobody may read.
    let dir = base.join("unreadable");
    let file = TokenFile::in_dir(&dir);
    file.store(&good).unwrap();
    fs::set_permissions(file.path(), fs::Permissions::from_mode(0o000)).unwrap();
    let read = file.load().map(|stored| stored.token);
    assert!(
        matches!(&read, Err(e @ Error::ReadFile { .. }) if denied(e)),
        "{read:?}"
    );
    let session = quiet_session(file.path());
    let started = rt.block_on(session.start());
    assert!(matches!(&started, Err(e) if denied(e)), "{started:?}");
    assert_eq!(session.token(), None);
    let refreshed = file.swap(Some(&good), &token("refreshed"));
    assert!(matches!(&refreshed, Err(e) if denied(e)), "{refreshed:?}");
    fs::set_permissions(file.path(), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        file.load().unwrap().token,
        Some(good.clone()),
        "refreshed over"
    );
    cases.push("unreadable file: ReadFile (permission denied, exit 77), never written over");

    // A directory nobody may write, with and without a lock file already there.
    for with_lock in [false, true] {
        let dir = base.join(format!("read-only-dir-{with_lock}"));
        let file = TokenFile::in_dir(&dir);
        file.store(&good).unwrap();
        if !with_lock {
            fs::remove_file(file.lock_path()).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(file.load().unwrap().token, Some(good.clone()));
        let written = file.store(&token("explicit"));
        assert!(
            matches!(&written, Err(e @ Error::WriteFile { .. }) if denied(e)),
            "{written:?}"
        );
        let session = quiet_session(file.path());
        rt.block_on(async {
            session.start().await.unwrap();
            let sent = refreshing_call(&session, &token("refreshed")).await;
            assert_eq!(sent, bearer(&good));
            let flushed = session.flush().await;
            assert!(matches!(&flushed, Err(e) if denied(e)), "{flushed:?}");
            let unlocked = session.start_with_token(token("unlocked")).await;
            assert!(matches!(&unlocked, Err(e) if denied(e)), "{unlocked:?}");
            assert_eq!(
                session.token(),
                Some(token("unlocked")),
                "in use all the same"
            );
        });
        assert_eq!(
            file.load().unwrap().token,
            Some(good.clone()),
            "the old token stays"
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(temp_files(&dir).is_empty());
    }
    cases.push("read-only directory: WriteFile (permission denied, exit 77), old token intact");
    cases
}

/// Whether user `nobody` can run this test binary: every directory above it searchable, the
/// binary readable and executable by others.
fn others_can_run_this_binary() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mode = |p: &Path| fs::metadata(p).map(|m| m.mode()).unwrap_or(0);
    if mode(&exe) & 0o005 != 0o005 {
        return Err(format!("{} is not executable by others", exe.display()));
    }
    for dir in exe.ancestors().skip(1) {
        if mode(dir) & 0o001 == 0 {
            return Err(format!("{} is not searchable by others", dir.display()));
        }
    }
    Ok(())
}

#[test]
fn permission_denied_gives_typed_errors_and_keeps_the_token() {
    let base = tempfile::tempdir().unwrap();
    if !running_as_root() {
        let cases = permission_cases(base.path());
        println!("permissions (as uid {}): {cases:?}", unsafe {
            libc::geteuid()
        });
        return;
    }
    if let Err(why) = others_can_run_this_binary() {
        println!(
            "SKIPPED permission cases: running as root, and user nobody cannot run the test binary: {why}"
        );
        return;
    }
    // The base is the child's own, as a user's home would be.
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = base.path().join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    let mut child = ChildProcess::spawn_as(
        CHILD_ENTRY,
        "unprivileged",
        &[("DIR", home.display().to_string())],
        Some((NOBODY, NOBODY)),
    );
    let mut cases = Vec::new();
    loop {
        let line = child.next_line().expect("the child reports");
        if line == "done" {
            break;
        }
        match line.strip_prefix("ok ") {
            Some(case) => cases.push(case.to_owned()),
            None => panic!("{line}"),
        }
    }
    child.wait_success();
    assert_eq!(cases.len(), 2);
    println!("permissions (root, so checked in a child running as uid {NOBODY}): {cases:?}");
}

// ---- a full disk and a read-only filesystem -----------------------------------------------

/// A 64 KiB tmpfs, unmounted when dropped.
struct SmallFs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount() -> Result<Self, String> {
        if !running_as_root() {
            return Err("not running as root, so no tmpfs can be mounted".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let target = c_path(dir.path());
        // SAFETY: valid C strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=64k,mode=0700".as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self {
            path: dir.path().to_owned(),
            _dir: dir,
        })
    }

    fn remount_read_only(&self) {
        let target = c_path(&self.path);
        // SAFETY: valid C strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "remount ro: {}", std::io::Error::last_os_error());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let target = c_path(&self.path);
        // SAFETY: a valid C string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn kind_is(error: &Error, kind: std::io::ErrorKind) -> bool {
    matches!(error, Error::WriteFile { source, .. } if source.kind() == kind)
        && error.exit_code() == 73
}

#[test]
fn a_full_disk_or_read_only_filesystem_fails_the_write_and_keeps_the_token() {
    let fs_ = match SmallFs::mount() {
        Ok(fs_) => fs_,
        Err(why) => {
            println!("SKIPPED full disk and read-only filesystem: {why}");
            return;
        }
    };
    let rt = reliability_common::small_runtime();
    let dir = fs_.path.join("client");
    let file = TokenFile::in_dir(&dir);
    let good = token("good.token");
    file.store(&good).unwrap();

    // Fill the filesystem.
    let filler_path = fs_.path.join("filler");
    let mut filler = fs::File::create(&filler_path).unwrap();
    let chunk = [b'x'; 4096];
    let mut filled = 0usize;
    loop {
        match filler.write(&chunk) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                break;
            }
        }
    }
    drop(filler);
    let written = file.store(&token("explicit"));
    assert!(
        matches!(&written, Err(e) if kind_is(e, std::io::ErrorKind::StorageFull)),
        "{written:?}"
    );
    assert_eq!(file.load().unwrap().token, Some(good.clone()));
    assert!(
        temp_files(&dir).is_empty(),
        "the failed write left its temp file"
    );
    let session = quiet_session(file.path());
    rt.block_on(async {
        session.start().await.unwrap();
        let sent = refreshing_call(&session, &token("refreshed")).await;
        assert_eq!(sent, bearer(&good));
        let flushed = session.flush().await;
        assert!(
            matches!(&flushed, Err(e) if kind_is(e, std::io::ErrorKind::StorageFull)),
            "{flushed:?}"
        );
    });
    assert_eq!(file.load().unwrap().token, Some(good.clone()), "full disk");
    assert!(temp_files(&dir).is_empty());

    // Read-only.
    fs::remove_file(&filler_path).unwrap();
    fs_.remount_read_only();
    let written = file.store(&token("explicit"));
    assert!(
        matches!(&written, Err(e) if kind_is(e, std::io::ErrorKind::ReadOnlyFilesystem)),
        "{written:?}"
    );
    let session = quiet_session(file.path());
    rt.block_on(async {
        session.start().await.unwrap();
        assert_eq!(session.token(), Some(good.clone()));
        let sent = refreshing_call(&session, &token("refreshed")).await;
        assert_eq!(sent, bearer(&good));
        let flushed = session.flush().await;
        assert!(
            matches!(&flushed, Err(e) if kind_is(e, std::io::ErrorKind::ReadOnlyFilesystem)),
            "{flushed:?}"
        );
        let cleared = session.clear().await;
        assert!(
            matches!(cleared, Err(Error::WriteFile { .. })),
            "{cleared:?}"
        );
    });
    assert_eq!(
        file.load().unwrap().token,
        Some(good),
        "read-only filesystem"
    );
    println!(
        "full disk (64 KiB tmpfs, {filled} bytes of filler) and read-only remount: explicit and \
         refresh writes fail with WriteFile (StorageFull / ReadOnlyFilesystem, exit 73), the \
         old token intact, no temp file left"
    );
}
