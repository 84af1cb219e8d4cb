//! What the reliability tests share: how far to scale them, a seeded random source, child
//! processes made of the test binary itself, and an agent on loopback.
//!
//! A multi-process test re-runs its own test binary as the child: `current_exe() --exact
//! <entry> --nocapture --test-threads=1`, with [`CHILD_ROLE`] naming what the child does. The
//! entry is a test that returns at once unless that variable is set, so in a normal run it is a
//! trivially passing test. A child talks to its parent in lines holding [`LINE_PREFIX`] on
//! stdout (the test harness prints its own lines there too; they are skipped), reads its orders
//! from stdin, and reports with its exit status.
#![allow(dead_code)] // each test file uses its own part of this

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
#[cfg(unix)]
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_agent_session_agent::{Agent, SessionManager};

/// Real keyrings for the multi-process tests' keyring variants.
#[cfg(all(target_os = "linux", feature = "keyring"))]
#[path = "../keyring_support/mod.rs"]
pub mod keyring_support;

/// The store a test's processes share for `dir`: the session file `dir/token`, or, in a
/// process of a keyring variant (`keyring_support::inside`, inherited by every child), the
/// keyring's entry for `dir` with its companion files there.
pub fn session_store(dir: &Path) -> std::sync::Arc<dyn tower_agent_session::store::TokenStore> {
    session_store_waiting(dir, tower_agent_session::TokenFile::DEFAULT_REAUTH_WAIT)
}

/// [`session_store`], waiting at most `reauth_wait` for another process's re-authentication.
pub fn session_store_waiting(
    dir: &Path,
    reauth_wait: Duration,
) -> std::sync::Arc<dyn tower_agent_session::store::TokenStore> {
    let file = tower_agent_session::TokenFile::in_dir(dir).reauth_wait(reauth_wait);
    #[cfg(all(target_os = "linux", feature = "keyring"))]
    if keyring_support::backend().is_some() {
        let waits = |companion: tower_agent_session::TokenFile| companion.reauth_wait(reauth_wait);
        return std::sync::Arc::new(keyring_support::store(dir).companion_waits(waits));
    }
    std::sync::Arc::new(file)
}

/// The environment variable that makes the child entry of a test binary do something.
pub const CHILD_ROLE: &str = "RELIABILITY_CHILD";

/// What starts the lines a child says to its parent.
pub const LINE_PREFIX: &str = "@@ ";

/// How long a child may take to say its next line or to exit. Only a bound on a hang: a loaded
/// CI machine can be slow to start a process, and a passing run never waits for it.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

pub const PASSWORD: &str = "correct horse battery staple";

/// `RELIABILITY_SCALE` (default 1): every count is multiplied by it, for longer local runs.
pub fn scale() -> u64 {
    std::env::var("RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// `n` times [`scale`].
pub fn scaled(n: u64) -> u64 {
    n * scale()
}

/// `RELIABILITY_SEED` if set, otherwise one drawn from the clock; printed by the caller so a
/// failing run can be repeated.
pub fn seed() -> u64 {
    std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            (now.as_nanos() as u64) | 1
        })
}

/// xorshift64*: small, seeded, good enough to pick moments and sizes.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The role this process was started in, if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ROLE).ok()
}

/// A parameter the parent gave this child (`RELIABILITY_<NAME>`).
pub fn param(name: &str) -> String {
    let key = format!("RELIABILITY_{name}");
    std::env::var(&key).unwrap_or_else(|_| panic!("the child needs {key}"))
}

/// Says one line to the parent. Stdout is line-buffered, so it is sent at once.
pub fn say(line: impl std::fmt::Display) {
    println!("{LINE_PREFIX}{line}");
}

/// Says why the child failed and exits with status 1.
pub fn fail(why: impl std::fmt::Display) -> ! {
    say(format_args!("failed {why}"));
    std::process::exit(1)
}

/// Waits for the parent's next line on stdin; `None` when stdin closed.
pub fn hear() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
    }
}

/// Takes an exclusive `flock` on `path` (created if missing) for a `hold-lock` child, as
/// another process holding the session file's lock would; fails the child if it cannot.
pub fn take_lock(path: &Path) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| fail(e));
    file.lock().unwrap_or_else(|e| fail(e));
    file
}

/// A child process of this test binary. Killed and reaped when dropped, so that no test leaves
/// one behind, even when it panics.
pub struct ChildProcess {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    name: String,
}

impl ChildProcess {
    /// Runs the test `entry` of this binary as `role`, with `params` as `RELIABILITY_<NAME>`.
    pub fn spawn(entry: &str, role: &str, params: &[(&str, String)]) -> Self {
        Self::spawn_as(entry, role, params, None)
    }

    /// Like [`ChildProcess::spawn`], as the user and group `ids` when given (needs root).
    pub fn spawn_as(
        entry: &str,
        role: &str,
        params: &[(&str, String)],
        ids: Option<(u32, u32)>,
    ) -> Self {
        let exe = std::env::current_exe().expect("the path of the test binary");
        let mut command = Command::new(exe);
        command
            .args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in params {
            command.env(format!("RELIABILITY_{name}"), value);
        }
        #[cfg(unix)]
        if let Some((uid, gid)) = ids {
            command.uid(uid).gid(gid);
        }
        #[cfg(not(unix))]
        assert!(
            ids.is_none(),
            "a child as another user is Unix's (uid, gid)"
        );
        // Wine now and then fails to start a process while others are being ended ("Internal
        // error", os error 1359): a few tries there. Elsewhere the first failure is the test's.
        let tries = if cfg!(windows) { 5 } else { 1 };
        let mut tried = 0;
        let mut child = loop {
            tried += 1;
            match command.spawn() {
                Ok(child) => break child,
                Err(e) if tried < tries => {
                    eprintln!("starting a {role} child failed ({e}); trying again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot start a {role} child: {e}"),
            }
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness's `test <name> ... ` has no newline, so the child's first line
                // may follow it.
                if let Some(at) = line.find(LINE_PREFIX)
                    && sender
                        .send(line[at + LINE_PREFIX.len()..].to_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let name = format!("{role} child {}", child.id());
        Self {
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            name,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child's next line; `None` once it closed stdout. Panics after [`PROCESS_TIMEOUT`].
    pub fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PROCESS_TIMEOUT) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{} said nothing for {PROCESS_TIMEOUT:?}", self.name)
            }
        }
    }

    /// The child's next line, which must start with `word`; returns what follows it.
    pub fn expect(&mut self, word: &str) -> String {
        match self.next_line() {
            Some(line) if line == word => String::new(),
            Some(line) => match line.strip_prefix(word).and_then(|r| r.strip_prefix(' ')) {
                Some(rest) => rest.to_owned(),
                None => {
                    let status = self.wait();
                    panic!("{}: expected {word:?}, got {line:?} ({status})", self.name)
                }
            },
            None => {
                let status = self.wait();
                panic!(
                    "{}: expected {word:?}, got end of output ({status})",
                    self.name
                )
            }
        }
    }

    /// Tells the child one line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("cannot talk to {}: {e}", self.name));
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the child to exit, for at most [`PROCESS_TIMEOUT`] (then kills it and panics).
    pub fn wait(&mut self) -> ExitStatus {
        self.stdin = None;
        let mut child = self.child.take().expect("the process is still owned");
        let pid = child.id();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait());
        });
        match receiver.recv_timeout(PROCESS_TIMEOUT) {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("cannot wait for {}: {e}", self.name),
            Err(_) => {
                // The waiting thread owns the child now; end it by its id.
                #[cfg(unix)]
                // SAFETY: kill(2) with a pid we spawned and have not reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL)
                };
                #[cfg(windows)]
                let _ = Command::new("taskkill")
                    .args(["/F", "/PID", &pid.to_string()])
                    .status();
                panic!("{} did not exit within {PROCESS_TIMEOUT:?}", self.name)
            }
        }
    }

    /// Waits for the child, which must exit with status 0.
    pub fn wait_success(&mut self) {
        let status = self.wait();
        assert!(status.success(), "{} failed: {status}", self.name);
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process is still owned");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed child")
    }

    /// Every line the child said that was not read yet, up to its end of output. Only after it
    /// exited, or this waits for it to.
    pub fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.next_line()).collect()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tokio runtime for a test that drives processes from its own thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A single-threaded runtime, for child processes.
pub fn small_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A running agent; dropping it stops the server.
pub struct RunningAgent {
    pub address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Serves `agent` (behind its own auth layer) on a free port of 127.0.0.1.
pub async fn serve(agent: Agent) -> RunningAgent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(agent.serve(listener, async {
        let _ = stopped.await;
    }));
    RunningAgent {
        address,
        _stop: stop,
    }
}

/// A channel to the agent at `address`.
pub async fn channel(address: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the agent at {address}: {e}"))
}

/// A manager whose key lives in `path`, so that a child can verify tokens too.
pub fn shared_manager(path: &Path) -> SessionManager {
    SessionManager::with_key_file(path).expect("a key file")
}

/// The names of this library's temp files in `dir` (`.token.XXXXXXXX.tmp`).
pub fn temp_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".token.") && n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `key=value` pairs of a child's report, as numbers.
pub fn counts(report: &str) -> std::collections::BTreeMap<String, u64> {
    report
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let v = v
                .parse()
                .unwrap_or_else(|_| panic!("not a count: {k}={v} in {report:?}"));
            (k.to_owned(), v)
        })
        .collect()
}

/// A temp directory on a memory filesystem (`/dev/shm`) when there is one, else the usual one.
///
/// For tests about parsing and counting, not durability: a durable write (two `fsync`s) costs
/// about 10 ms on a loaded disk, which would make thousands of them the whole of a test's time.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}
