//! What the process tests of the example CLI share: the example binaries, an agent process on a
//! free port, and a client run against it with its session in a temporary directory.
//!
//! The binaries are the crate's own examples, which `cargo test` builds next to the test's
//! binary (`cargo test --test cli` alone does not build them: run `cargo build --examples`
//! first). Each test starts its own agent on a free port and reads the port from the agent's
//! `listening on` line; the agent dies with the test (killed on drop, and it exits when its
//! stdin closes).
#![allow(dead_code)] // each test file uses its own part of this

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use tempfile::TempDir;
use tower_agent_session::Token;
use tower_agent_session_agent::SessionManager;

pub const PASSWORD: &str = "correct horse battery staple";

/// How long an agent may take to announce its address or to exit when told to. Only a bound on
/// a hang: a loaded CI machine can be slow to start a process, and a passing run never waits
/// for it.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The exit codes the examples promise (sysexits).
pub const EX_DATAERR: i32 = 65;
pub const EX_USAGE: i32 = 64;
pub const EX_UNAVAILABLE: i32 = 69;
pub const EX_NOPERM: i32 = 77;

/// The example binary `name`.
///
/// This test runs as `target/<profile>/deps/cli-<hash>`; `cargo test` puts the examples in
/// `target/<profile>/examples/`. A missing binary, or one older than a source it is built from
/// (as its dep-info file `<name>.d` lists them), fails here with what to do, rather than testing
/// something other than the code.
pub fn example(name: &str) -> PathBuf {
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
pub fn dependencies(dep_info: &str) -> Vec<PathBuf> {
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
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the process is still owned")
    }

    /// Waits for the process to exit, for at most [`PROCESS_TIMEOUT`]. Closes its stdin first,
    /// as `Child::wait` does.
    pub fn wait(&mut self) -> Result<ExitStatus, String> {
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
                #[cfg(unix)]
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                #[cfg(windows)]
                let _ = Command::new("taskkill")
                    .args(["/F", "/PID", &pid.to_string()])
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
pub struct AgentProcess {
    pub process: KillOnDrop,
    pub address: SocketAddr,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts an agent on a free port of 127.0.0.1, its stderr going to `log`, and waits for its
    /// `listening on` line. `AGENT_RUST_LOG` replaces what it logs (say
    /// `h2::proto::streams=debug`, to see its connections' errors).
    pub fn start(log: PathBuf, key_file: Option<&Path>) -> Self {
        let log_file = File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create the agent log {}: {e}", log.display()));
        let mut command = Command::new(example("agent"));
        command
            .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-close"])
            .env("AGENT_PASSWORD", PASSWORD)
            .env(
                "RUST_LOG",
                std::env::var("AGENT_RUST_LOG")
                    .unwrap_or_else(|_| "warn,agent=info,tower_agent_session=debug".to_owned()),
            )
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

pub fn read_log(log: &Path) -> String {
    match fs::read_to_string(log) {
        Ok(text) => format!("--- agent log {}\n{text}", log.display()),
        Err(e) => format!("--- agent log {} unreadable: {e}", log.display()),
    }
}

/// One finished `client` run, printed with everything needed to see why an assertion failed.
pub struct Run {
    pub args: Vec<String>,
    pub output: Output,
    pub agent_log: Option<PathBuf>,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Asserts the exit code, showing the run if it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "unexpected exit code\n{self}");
        self
    }

    /// Asserts that stderr contains `text`.
    #[track_caller]
    pub fn expect_stderr(&self, text: &str) -> &Self {
        assert!(
            self.stderr().contains(text),
            "stderr does not contain {text:?}\n{self}"
        );
        self
    }

    /// Asserts that stdout contains `text`.
    #[track_caller]
    pub fn expect_stdout(&self, text: &str) -> &Self {
        assert!(
            self.stdout().contains(text),
            "stdout does not contain {text:?}\n{self}"
        );
        self
    }

    /// Asserts that stdout is exactly `line` and a newline.
    #[track_caller]
    pub fn expect_stdout_line(&self, line: &str) -> &Self {
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

/// The variables the `client` example finds its agent and session by: a test's own are removed
/// from every client run, which sees only those the test gives it.
const SESSION_ENVIRONMENT: [&str; 9] = [
    "AGENT_PASSWORD",
    "AGENT_TOKEN",
    "AGENT_ADDR",
    "AGENT_SESSION_DIR",
    "AGENT_SESSION_STORE",
    "AGENT_SESSION_KEYRING",
    // Where the default session directory is: no test may touch the user's.
    "HOME",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
];

/// The `client` example's command line `args`, with no options of its own; `env` is all of its
/// session environment (see [`SESSION_ENVIRONMENT`]). Its stdio is the caller's to set.
pub fn bare_client_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(example("client"));
    command.args(args);
    for name in SESSION_ENVIRONMENT {
        command.env_remove(name);
    }
    // Inside a keyring variant of a test (tests/keyring_support), the CLI keeps its token in
    // that keyring too.
    if let Ok(backend) = std::env::var("KEYRING_TEST_INSIDE") {
        command
            .env("AGENT_SESSION_STORE", "keyring")
            .env("AGENT_SESSION_KEYRING", backend);
    }
    command.envs(env.iter().copied());
    command
}

/// The `client` example's command line against `agent` with the session in `session_dir` (see
/// [`bare_client_command`]).
pub fn client_command(
    agent: &str,
    session_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut command = bare_client_command(&[], env);
    command
        .arg("--agent")
        .arg(agent)
        .arg("--session-dir")
        .arg(session_dir)
        .args(args);
    command
}

/// Runs `command`, a `client` run of `args`, with no stdin, to its end.
pub fn run(mut command: Command, args: &[&str], agent_log: Option<&Path>) -> Run {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the client: {e}"));
    Run {
        args: args.iter().map(|&arg| arg.to_owned()).collect(),
        output,
        agent_log: agent_log.map(Path::to_owned),
    }
}

/// Runs the `client` example (see [`client_command`]) with no stdin, to its end.
pub fn run_client(
    agent: &str,
    session_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    agent_log: Option<&Path>,
) -> Run {
    run(
        client_command(agent, session_dir, args, env),
        args,
        agent_log,
    )
}

/// A test's world: a temporary directory holding the client's session directory, a password
/// file and the agent's files, and a running agent.
pub struct Fixture {
    pub dir: TempDir,
    pub agent: Option<AgentProcess>,
    pub key_file: bool,
    pub agents_started: usize,
}

impl Fixture {
    /// An agent whose key lives only in its memory.
    pub fn new() -> Self {
        Self::start(false)
    }

    /// An agent whose key lives in [`Fixture::key_path`], where the test can read it too.
    pub fn with_key_file() -> Self {
        Self::start(true)
    }

    pub fn start(key_file: bool) -> Self {
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
    pub fn restart_agent(&mut self) {
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

    pub fn agent(&self) -> &AgentProcess {
        self.agent.as_ref().expect("an agent runs")
    }

    /// The client's session directory; it does not exist until a client makes it.
    pub fn session_dir(&self) -> PathBuf {
        self.dir.path().join("session")
    }

    pub fn token_path(&self) -> PathBuf {
        self.session_dir()
            .join(tower_agent_session::TokenFile::NAME)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("agent").join("key")
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    pub fn write_password_file(&self, name: &str, password: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, format!("{password}\n")).expect("write a password file");
        path
    }

    pub fn client(&self, args: &[&str]) -> Run {
        self.client_with_env(args, &[])
    }

    pub fn client_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let agent = self.agent();
        run_client(
            &agent.address.to_string(),
            &self.session_dir(),
            args,
            env,
            Some(&agent.log),
        )
    }

    /// The `client` command line for this fixture's agent and session (see
    /// [`client_command`]).
    pub fn client_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        client_command(
            &self.agent().address.to_string(),
            &self.session_dir(),
            args,
            env,
        )
    }

    /// `client --password-file <the right password> unlock`, which must succeed.
    pub fn unlock(&self) {
        let password_file = self.password_file();
        let password_file = password_file.to_str().expect("a UTF-8 temporary path");
        self.client(&["--password-file", password_file, "unlock"])
            .expect_code(0)
            .expect_stdout_line("unlocked");
    }

    /// The session file's token, which must be there.
    #[track_caller]
    pub fn token(&self) -> String {
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

    /// Returns once a token the agent mints now expires later than `token`, which it issued
    /// (its JWTs count in whole seconds from `iat`): waits for the clock's next second.
    pub fn wait_for_a_later_token(&self, token: &str) {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).expect("a JWT");
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        let claims: serde_json::Value = serde_json::from_slice(&payload).expect("JSON claims");
        let issued = claims["iat"].as_u64().expect("an `iat` claim");
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("a clock after 1970")
                .as_secs()
        };
        let bound = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while now() <= issued {
            assert!(std::time::Instant::now() < bound, "the clock stood still");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Puts `token` in the session file, as another process would.
    pub fn write_token(&self, token: &str) {
        tower_agent_session::TokenFile::in_dir(self.session_dir())
            .store(&Token::new(token).expect("a well-formed token"))
            .expect("write the session file");
    }

    /// The agent's key, read from its key file as a second agent would.
    pub fn manager(&self) -> SessionManager {
        assert!(self.key_file, "this fixture's agent keeps no key file");
        SessionManager::with_key_file(self.key_path()).expect("the agent's key file")
    }
}
