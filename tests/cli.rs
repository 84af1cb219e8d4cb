//! The example CLI against the example agent, as real processes: every `client` run is a new
//! process that finds its session in the session file, as a user's shell commands would.
//!
//! The binaries are the crate's own examples, which `cargo test` builds next to this test's
//! binary (`cargo test --test cli` alone does not build them: run `cargo build --examples`
//! first). Each test starts its own agent on a free port and reads the port from the agent's
//! `listening on` line; the agent dies with the test (killed on drop, and it exits when its
//! stdin closes).

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use agent_session::agent::{SessionManager, VerifyError};
use agent_session::{TOKEN_FILE_NAME, TOKEN_INVALID_MESSAGE, TOKEN_NOT_PROVIDED_MESSAGE, Token};
use tempfile::TempDir;

const PASSWORD: &str = "correct horse battery staple";

/// How long an agent may take to announce its address or to exit when told to. Only a bound on
/// a hang: a loaded CI machine can be slow to start a process, and a passing run never waits
/// for it.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The exit codes the examples promise (sysexits).
const EX_DATAERR: i32 = 65;
const EX_USAGE: i32 = 64;
const EX_UNAVAILABLE: i32 = 69;
const EX_NOPERM: i32 = 77;

/// The example binary `name`.
///
/// This test runs as `target/<profile>/deps/cli-<hash>`; `cargo test` puts the examples in
/// `target/<profile>/examples/`. A missing binary, or one older than a source it is built from
/// (as its dep-info file `<name>.d` lists them), fails here with what to do, rather than testing
/// something other than the code.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the test binary");
    let examples = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join("examples");
    let path = examples.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let built = match fs::metadata(&path).and_then(|meta| meta.modified()) {
        Ok(built) => built,
        Err(e) => panic!(
            "the example binary {} is missing ({e}): run `cargo build --examples` first \
             (plain `cargo test` builds it; `cargo test --test cli` does not)",
            path.display()
        ),
    };
    let dep_info = fs::read_to_string(examples.join(format!("{name}.d"))).unwrap_or_default();
    for source in dependencies(&dep_info) {
        let modified = fs::metadata(&source).and_then(|meta| meta.modified());
        if modified.is_ok_and(|modified| modified > built) {
            panic!(
                "the example binary {} is older than {}: run `cargo build --examples` first \
                 (plain `cargo test` rebuilds it; `cargo test --test cli` does not)",
                path.display(),
                source.display()
            );
        }
    }
    path
}

/// The files a Makefile-style dep-info file (`target: dep dep…`, spaces escaped as `\ `) says
/// its targets are built from.
fn dependencies(dep_info: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in dep_info.lines().filter(|line| !line.starts_with('#')) {
        let Some((_target, deps)) = line.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = deps.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ' ' => {
                    if !current.is_empty() {
                        files.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                c => current.push(c),
            }
        }
        if !current.is_empty() {
            files.push(PathBuf::from(current));
        }
    }
    files
}

/// A child process that is killed and reaped when dropped, so that no test leaves one behind,
/// even when it panics.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the process is still owned")
    }

    /// Waits for the process to exit, for at most [`PROCESS_TIMEOUT`]. Closes its stdin first,
    /// as `Child::wait` does.
    fn wait(&mut self) -> Result<ExitStatus, String> {
        let mut child = self.0.take().expect("the process is still owned");
        let pid = child.id();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait());
        });
        match receiver.recv_timeout(PROCESS_TIMEOUT) {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => Err(format!("cannot wait for process {pid}: {e}")),
            Err(_) => {
                // The waiting thread owns the child now; end it by its id.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                Err(format!(
                    "process {pid} did not exit within {PROCESS_TIMEOUT:?}"
                ))
            }
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `agent` example.
struct AgentProcess {
    process: KillOnDrop,
    address: SocketAddr,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts an agent on a free port of 127.0.0.1, its stderr going to `log`, and waits for its
    /// `listening on` line.
    fn start(log: PathBuf, key_file: Option<&Path>) -> Self {
        let log_file = File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create the agent log {}: {e}", log.display()));
        let mut command = Command::new(example("agent"));
        command
            .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-close"])
            .env("AGENT_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn,agent=info,agent_session=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file);
        if let Some(key_file) = key_file {
            command.arg("--key-file").arg(key_file);
        }
        let mut process = KillOnDrop(Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the agent: {e}")),
        ));

        let stdout = process.child().stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = sender.send(read);
        });
        let line = match receiver.recv_timeout(PROCESS_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("cannot read the agent's stdout: {e}"),
            Err(_) => panic!(
                "the agent did not announce its address within {PROCESS_TIMEOUT:?}\n{}",
                read_log(&log)
            ),
        };
        if line.is_empty() {
            let status = process.wait();
            panic!(
                "the agent closed stdout without announcing its address ({status:?})\n{}",
                read_log(&log)
            );
        }
        let address = line
            .strip_prefix("listening on ")
            .and_then(|address| address.trim_end().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the agent's first line is not `listening on <addr>`: {line:?}\n{}",
                    read_log(&log)
                )
            });
        Self {
            process,
            address,
            log,
        }
    }
}

fn read_log(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(text) => format!("--- agent log {}\n{text}", log.display()),
        Err(e) => format!("--- agent log {} unreadable: {e}", log.display()),
    }
}

/// One finished `client` run, printed with everything needed to see why an assertion failed.
struct Run {
    args: Vec<String>,
    output: Output,
    agent_log: Option<PathBuf>,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code, showing the run if it differs.
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    fn expect_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr().contains(text),
            "stderr does not contain {text:?}\n{self}"
        );
        self
    }

    /// Asserts that stdout is exactly `line` and a newline.
    #[track_caller]
    fn expect_stdout_line(&self, line: &str) -> &Self {
        assert_eq!(
            self.stdout(),
            format!("{line}\n"),
            "unexpected stdout\n{self}"
        );
        self
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "--- client {}: {}",
            self.args.join(" "),
            self.output.status
        )?;
        writeln!(f, "--- stdout\n{}", self.stdout())?;
        writeln!(f, "--- stderr\n{}", self.stderr())?;
        if let Some(log) = &self.agent_log {
            writeln!(f, "{}", read_log(log))?;
        }
        Ok(())
    }
}

/// Runs the `client` example against `agent` with the session in `session_dir`; `env` is all of
/// its session environment (the test's own `AGENT_*` variables are removed).
fn run_client(
    agent: &str,
    session_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    agent_log: Option<&Path>,
) -> Run {
    let mut command = Command::new(example("client"));
    command
        .arg("--agent")
        .arg(agent)
        .arg("--session-dir")
        .arg(session_dir)
        .args(args)
        .env_remove("AGENT_PASSWORD")
        .env_remove("AGENT_TOKEN")
        .env_remove("AGENT_ADDR")
        .env_remove("AGENT_SESSION_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run the client: {e}"));
    Run {
        args: args.iter().map(|&arg| arg.to_owned()).collect(),
        output,
        agent_log: agent_log.map(Path::to_owned),
    }
}

/// A test's world: a temporary directory holding the client's session directory, a password
/// file and the agent's files, and a running agent.
struct Fixture {
    dir: TempDir,
    agent: Option<AgentProcess>,
    key_file: bool,
    agents_started: usize,
}

impl Fixture {
    /// An agent whose key lives only in its memory.
    fn new() -> Self {
        Self::start(false)
    }

    /// An agent whose key lives in [`Fixture::key_path`], where the test can read it too.
    fn with_key_file() -> Self {
        Self::start(true)
    }

    fn start(key_file: bool) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // A trailing newline, as an editor leaves it: the client must trim it.
        fs::write(dir.path().join("password"), format!("{PASSWORD}\n"))
            .expect("write the password file");
        let mut fixture = Self {
            dir,
            agent: None,
            key_file,
            agents_started: 0,
        };
        fixture.restart_agent();
        fixture
    }

    /// Stops the agent (if one runs) and starts a new one, on a new port.
    fn restart_agent(&mut self) {
        // The old agent is gone before the new one starts: only the key file links them.
        self.agent = None;
        self.agents_started += 1;
        let log = self
            .dir
            .path()
            .join(format!("agent-{}.log", self.agents_started));
        let key_path = self.key_path();
        let key_file = self.key_file.then_some(key_path.as_path());
        self.agent = Some(AgentProcess::start(log, key_file));
    }

    fn agent(&self) -> &AgentProcess {
        self.agent.as_ref().expect("an agent runs")
    }

    /// The client's session directory; it does not exist until a client makes it.
    fn session_dir(&self) -> PathBuf {
        self.dir.path().join("session")
    }

    fn token_path(&self) -> PathBuf {
        self.session_dir().join(TOKEN_FILE_NAME)
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("agent").join("key")
    }

    fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    fn write_password_file(&self, name: &str, password: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, format!("{password}\n")).expect("write a password file");
        path
    }

    fn client(&self, args: &[&str]) -> Run {
        self.client_with_env(args, &[])
    }

    fn client_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let agent = self.agent();
        run_client(
            &agent.address.to_string(),
            &self.session_dir(),
            args,
            env,
            Some(&agent.log),
        )
    }

    /// `client --password-file <the right password> unlock`, which must succeed.
    fn unlock(&self) {
        let password_file = self.password_file();
        let password_file = password_file.to_str().expect("a UTF-8 temporary path");
        self.client(&["--password-file", password_file, "unlock"])
            .expect_code(0)
            .expect_stdout_line("unlocked");
    }

    /// The session file's token, which must be there.
    #[track_caller]
    fn token(&self) -> String {
        let text = fs::read_to_string(self.token_path()).unwrap_or_else(|e| {
            panic!(
                "cannot read the session file {}: {e}",
                self.token_path().display()
            )
        });
        let token = text.trim();
        assert!(!token.is_empty(), "the session file is blank");
        token.to_owned()
    }

    /// Puts `token` in the session file, as another process would.
    fn write_token(&self, token: &str) {
        agent_session::TokenFile::in_dir(self.session_dir())
            .write(&Token::new(token).expect("a well-formed token"))
            .expect("write the session file");
    }

    /// The agent's key, read from its key file as a second agent would.
    fn manager(&self) -> SessionManager {
        assert!(self.key_file, "this fixture's agent keeps no key file");
        SessionManager::with_key_file(self.key_path()).expect("the agent's key file")
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn dep_info_is_read_as_cargo_writes_it() {
    assert_eq!(
        dependencies("/t/examples/agent: /w/src/lib.rs /w/my\\ dir/a.rs\n\n"),
        [
            PathBuf::from("/w/src/lib.rs"),
            PathBuf::from("/w/my dir/a.rs")
        ]
    );
    assert!(dependencies("").is_empty());
}

#[test]
fn unlock_acquires_a_session_token() {
    let fixture = Fixture::new();
    fixture.unlock();

    let token = fixture.token();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    assert_eq!(mode(&fixture.token_path()), 0o600, "session file mode");
    assert_eq!(
        mode(&fixture.session_dir()),
        0o700,
        "session directory mode"
    );

    // No password this time: the session file is what lets it in.
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");
}

#[test]
fn serial_commands_refresh_the_token() {
    let fixture = Fixture::new();
    fixture.unlock();
    let unlocked = fixture.token();

    fixture.client(&["status"]).expect_code(0);
    let first = fixture.token();
    assert_ne!(first, unlocked, "the first status left the token as it was");

    fixture.client(&["status"]).expect_code(0);
    let second = fixture.token();
    assert_ne!(second, first, "the second status left the token as it was");

    // The refreshed token is one the agent takes.
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");
}

#[test]
fn lock_deletes_the_session_token() {
    let fixture = Fixture::new();
    fixture.unlock();
    assert!(fixture.token_path().exists());

    fixture
        .client(&["lock"])
        .expect_code(0)
        .expect_stdout_line("locked");
    assert!(
        !fixture.token_path().exists(),
        "lock left the session file in place"
    );

    fixture
        .client(&["status"])
        .expect_code(EX_NOPERM)
        .expect_stderr(TOKEN_NOT_PROVIDED_MESSAGE);
}

#[test]
fn lockall_invalidates_old_tokens() {
    let fixture = Fixture::new();
    fixture.unlock();
    let saved = fixture.token();

    fixture
        .client(&["lockall"])
        .expect_code(0)
        .expect_stdout_line("all sessions locked");
    assert!(
        !fixture.token_path().exists(),
        "lockall left the session file in place"
    );

    // Sent explicitly, with no session file.
    fixture
        .client_with_env(&["status"], &[("AGENT_TOKEN", &saved)])
        .expect_code(EX_DATAERR)
        .expect_stderr(TOKEN_INVALID_MESSAGE);

    // Found in the session file.
    fixture.write_token(&saved);
    fixture
        .client(&["status"])
        .expect_code(EX_DATAERR)
        .expect_stderr(TOKEN_INVALID_MESSAGE);

    // What the message asks for cures it, though the dead token is still on file.
    fixture.unlock();
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn an_expired_token_is_rejected() {
    let fixture = Fixture::with_key_file();
    let manager = fixture.manager();

    // First a token this test minted that is still valid: the test shares the agent's key, so
    // the rejection below is for the expiry and not for a foreign signature.
    let valid = manager.mint().expect("mint a token");
    fixture.write_token(valid.expose());
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");

    let expired = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(60 * 60))
        .expect("mint an expired token");
    assert_eq!(manager.verify(&expired), Err(VerifyError::Expired));
    fixture.write_token(expired.expose());
    fixture
        .client(&["status"])
        .expect_code(EX_DATAERR)
        .expect_stderr(TOKEN_INVALID_MESSAGE);

    fixture.unlock();
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn a_wrong_password_is_refused_and_leaves_the_session_file_alone() {
    let fixture = Fixture::new();
    let wrong = fixture.write_password_file("wrong-password", "not the password");
    let wrong = wrong.to_str().expect("a UTF-8 temporary path");

    // No session yet: none is made.
    fixture
        .client(&["--password-file", wrong, "unlock"])
        .expect_code(EX_NOPERM)
        .expect_stderr("Incorrect password");
    assert!(
        !fixture.token_path().exists(),
        "a refused unlock wrote a session file"
    );

    // A live session: it stays exactly as it was.
    fixture.unlock();
    let before = fs::read(fixture.token_path()).expect("read the session file");
    fixture
        .client(&["--password-file", wrong, "unlock"])
        .expect_code(EX_NOPERM)
        .expect_stderr("Incorrect password");
    let after = fs::read(fixture.token_path()).expect("read the session file");
    assert_eq!(after, before, "a refused unlock changed the session file");
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn echo_prints_its_text() {
    let fixture = Fixture::new();
    fixture.unlock();
    fixture
        .client(&["echo", "hello", "world"])
        .expect_code(0)
        .expect_stdout_line("hello world");
}

#[test]
fn a_token_survives_an_agent_restart_with_the_same_key_file() {
    let mut fixture = Fixture::with_key_file();
    fixture.unlock();
    let before = fixture.agent().address;

    fixture.restart_agent();
    assert_ne!(
        fixture.agent().address,
        before,
        "the new agent must be a new process"
    );
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");
}

#[test]
fn a_missing_agent_is_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A port that was free a moment ago and that nothing listens on now.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let run = run_client(&address.to_string(), dir.path(), &["status"], &[], None);
    run.expect_code(EX_UNAVAILABLE)
        .expect_stderr("cannot reach the agent")
        .expect_stderr(&address.to_string());
}

#[test]
fn the_agent_needs_a_password() {
    let output = Command::new(example("agent"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("AGENT_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run the agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("no password"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "it announced an address without a password"
    );
}

#[test]
fn the_agent_stops_when_its_stdin_closes() {
    let fixture = Fixture::new();
    let mut agent = fixture.agent.expect("an agent runs");
    drop(agent.process.child().stdin.take());
    let status = agent.process.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}\n{}", read_log(&agent.log));
}

#[test]
fn the_agent_stops_on_sigterm() {
    let fixture = Fixture::new();
    let mut agent = fixture.agent.expect("an agent runs");
    // Held open until the agent has exited: `Child::wait` would close it, and the agent would
    // stop for that reason instead.
    let _stdin = agent.process.child().stdin.take();
    let pid = agent.process.child().id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = agent.process.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}\n{}", read_log(&agent.log));
}
