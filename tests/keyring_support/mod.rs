//! Real keyrings for the tests, on this machine: the kernel's (a session keyring of the test's
//! own, joined with `keyctl session -`, which every process it starts shares) and a Secret
//! Service (`gnome-keyring-daemon` on a private D-Bus with no service activation, so that a
//! daemon stopped or killed stays so). A test runs itself again inside one of them
//! ([`inside`]): in the parent it returns `false` after the child passed, in the child `true`.
//!
//! Needs `keyctl` (Debian's keyutils), `dbus-daemon` (dbus) and `gnome-keyring-daemon`
//! (gnome-keyring); `.ci/run` installs them.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tower_agent_session::{KeyringBackend, KeyringStore, Token};

/// Set in the child: which keyring it runs inside.
pub const INSIDE: &str = "KEYRING_TEST_INSIDE";
/// Set in the child for the Secret Service: the directory of the daemon's home.
const DAEMON_HOME: &str = "KEYRING_TEST_DAEMON_HOME";
/// The login keyring's password for the tests' daemons.
const DAEMON_PASSWORD: &str = "keyring test password";
/// Only a bound on a hang: a passing run never comes near it.
const HANG: Duration = Duration::from_secs(300);

/// [`HANG`], plus the length of a measuring run asked for (`CHURN_SECS`, tests/churn.rs).
fn hang() -> Duration {
    let asked = std::env::var("CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    HANG + Duration::from_secs(asked.unwrap_or(0))
}
/// Only a bound on a daemon that never serves: one starts in well under a second.
const STARTUP: Duration = Duration::from_secs(60);

/// The backend the child runs inside, if this is one.
pub fn backend() -> Option<KeyringBackend> {
    KeyringBackend::from_name(&std::env::var(INSIDE).ok()?)
}

/// Runs the test `name` of this binary again inside `backend`'s keyring and asserts that it
/// passed; `true` in that child, `false` in the parent (which then returns).
pub fn inside(backend: KeyringBackend, name: &str) -> bool {
    if let Some(running) = self::backend() {
        assert_eq!(running, backend, "the child runs inside another keyring");
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // `--include-ignored`: the test named runs, whether or not it is one run by hand.
    let test_args = [
        name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut bus = None;
    let mut command = match backend {
        KeyringBackend::KeyUtils => {
            let mut command = Command::new(program("keyctl"));
            command.args(["session", "-"]).arg(&exe);
            command
        }
        KeyringBackend::SecretService => {
            let started = Bus::start();
            let mut command = Command::new(&exe);
            command
                .env("DBUS_SESSION_BUS_ADDRESS", &started.address)
                .env(DAEMON_HOME, started.dir.path().join("home"));
            bus = Some(started);
            command
        }
        other => panic!("no test environment for {other}"),
    };
    command.args(test_args).env(INSIDE, backend.name());
    let status = wait_bounded(command.spawn().expect("the test binary, again"), hang());
    drop(bus);
    assert!(
        status,
        "{name} failed inside the {backend} (its output is above)"
    );
    false
}

/// Runs `scenario` inside `backend`'s keyring, as the test `name` of this binary, with a
/// Secret Service daemon started for it first: a test's keyring variant in one line.
pub fn run_inside(backend: KeyringBackend, name: &str, scenario: impl FnOnce()) {
    if inside(backend, name) {
        let _daemon = (backend == KeyringBackend::SecretService).then(Daemon::start);
        scenario();
    }
}

/// `program`'s path, which must be installed: never looked up in `PATH`.
pub fn program(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: the keyring tests need keyutils, dbus and gnome-keyring");
}

/// Waits for `child` at most `bound`; kills it past that. `true` if it exited 0.
fn wait_bounded(mut child: Child, bound: Duration) -> bool {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status.success();
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child ran past {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private session bus: `dbus-daemon` with no service directories, so nothing is started
/// on demand.
struct Bus {
    daemon: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:dir={}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow send_destination="*" eavesdrop="true"/>
<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>"#,
                dir.path().display()
            ),
        )
        .expect("the bus's configuration");
        let mut daemon = Command::new(program("dbus-daemon"))
            .arg(format!("--config-file={}", config.display()))
            .args(["--print-address=1", "--nofork"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        // Printed once it listens.
        let mut address = String::new();
        let stdout = daemon.stdout.take().expect("its stdout");
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("the bus's address");
        assert!(!address.trim().is_empty(), "dbus-daemon printed no address");
        Self {
            daemon,
            address: address.trim().to_owned(),
            dir,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A Secret Service on the child's bus: `gnome-keyring-daemon`, its login keyring unlocked,
/// in the home the parent named (so that one started again finds the same keyring).
pub struct Daemon {
    child: Child,
    /// Stopped by [`stop`](Self::stop) and not resumed since: dropped so, it is let go on
    /// first. Only then is it signalled there: a daemon killed and reaped has no pid left to
    /// signal, and that pid may be another process's by then.
    stopped: AtomicBool,
}

impl Daemon {
    /// Starts it; returns once it serves: it printed its environment and owns its name.
    pub fn start() -> Self {
        let home = std::env::var_os(DAEMON_HOME).expect("inside the Secret Service's child");
        std::fs::create_dir_all(&home).expect("the daemon's home");
        let mut child = Command::new(program("gnome-keyring-daemon"))
            .args(["--foreground", "--unlock", "--components=secrets"])
            // Its keyrings under its own home, as a user's are.
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gnome-keyring-daemon");
        let mut stdin = child.stdin.take().expect("its stdin");
        stdin
            .write_all(DAEMON_PASSWORD.as_bytes())
            .expect("the password");
        drop(stdin);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("the daemon's first line");
        assert!(
            line.starts_with("GNOME_KEYRING"),
            "gnome-keyring-daemon did not start: {line:?}"
        );
        let mut daemon = Self {
            child,
            stopped: AtomicBool::new(false),
        };
        daemon.wait_for_its_name();
        daemon
    }

    /// Returns once it owns the Secret Service's name on the bus. It prints its environment
    /// before it has taken the name, and a call in between is refused (`ServiceUnknown`): a
    /// third of the runs of a test failed so. Asked again until it does (the bus tells of a
    /// new owner only to a subscriber, which `dbus-send` cannot be), each question a process
    /// of its own; bounded.
    fn wait_for_its_name(&mut self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            let reply = Command::new(program("dbus-send"))
                .args([
                    "--session",
                    "--dest=org.freedesktop.DBus",
                    "--print-reply=literal",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .stderr(Stdio::inherit())
                .output()
                .expect("dbus-send");
            assert!(reply.status.success(), "dbus-send: {}", reply.status);
            match String::from_utf8_lossy(&reply.stdout).trim() {
                "boolean true" => return,
                "boolean false" => {}
                other => panic!("NameHasOwner answered {other:?}"),
            }
            if let Some(status) = self.child.try_wait().expect("wait for the daemon") {
                panic!("gnome-keyring-daemon exited before it took its name: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not take its name on the bus within {STARTUP:?}"
            );
        }
    }

    /// Stops it (SIGSTOP): it no longer answers, and its bus queues every call to it.
    pub fn stop(&self) {
        let sent = self.signal("-STOP").expect("kill -STOP");
        assert!(sent.success(), "kill -STOP {}: {sent}", self.child.id());
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Lets it go on (SIGCONT).
    pub fn resume(&self) {
        let sent = self.signal("-CONT").expect("kill -CONT");
        assert!(sent.success(), "kill -CONT {}: {sent}", self.child.id());
        self.stopped.store(false, Ordering::SeqCst);
    }

    /// `kill(1)` by its path, as every program here is run: std signals nothing but SIGKILL.
    fn signal(&self, signal: &str) -> std::io::Result<std::process::ExitStatus> {
        Command::new(program("kill"))
            .args([signal, &self.child.id().to_string()])
            .status()
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stopped.store(false, Ordering::SeqCst);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stopped.load(Ordering::SeqCst) {
            let _ = self.signal("-CONT");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store on the child's keyring: one entry for `dir`, with its companion files there, named
/// as the example client names it (so that both share it).
pub fn store(dir: &Path) -> KeyringStore {
    let backend = backend().expect("inside a keyring's child");
    KeyringStore::in_dir(backend, "tower-agent-session", dir).expect("the session's directory")
}

/// Asserts that no file under `dir` holds `token`, or any 12 bytes of it.
pub fn assert_no_secret_on_disk(dir: &Path, token: &str) {
    assert_none_on_disk(dir, &[token]);
}

/// Asserts that no file under `dir` holds any of `tokens`, or any 12 bytes of one: every
/// token a test wrote, so that an earlier one left behind is caught, not only the last.
pub fn assert_no_secrets_on_disk(dir: &Path, tokens: &[Token]) {
    let tokens: Vec<&str> = tokens.iter().map(Token::expose).collect();
    assert_none_on_disk(dir, &tokens);
}

/// Asserts that no file under `dir` holds a JWT, or the start of one (`eyJ`, the base64 of
/// `{"` that begins every JWT's header): for the runs of many processes, whose every token no
/// one test sees, so that any token the agent handed out is caught, not only the last.
pub fn assert_no_jwt_on_disk(dir: &Path) {
    assert_none_on_disk(dir, &["eyJ"]);
}

/// Every file under `dir`, however deep, read whole; a file or directory that cannot be read
/// fails the test (one unread could hold the token).
fn assert_none_on_disk(dir: &Path, tokens: &[&str]) {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if meta.is_dir() {
            let entries =
                std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for entry in entries {
                stack.push(
                    entry
                        .unwrap_or_else(|e| panic!("an entry of {}: {e}", path.display()))
                        .path(),
                );
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for (n, token) in tokens.iter().enumerate() {
                let part = 12.min(token.len());
                assert!(
                    !token
                        .as_bytes()
                        .windows(part)
                        .any(|window| bytes.windows(part).any(|w| w == window)),
                    "{} holds part of token {n} of {}",
                    path.display(),
                    tokens.len()
                );
            }
        }
    }
}
