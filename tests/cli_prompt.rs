//! The example CLI's password prompt, driven through a pseudo-terminal as a user at a keyboard
//! would drive it: each `client` is a real process whose controlling terminal is the slave side
//! of a pty, and the test reads what it shows and types on the master side.
//!
//! `cargo test --test cli_prompt` alone does not build the example binaries: run
//! `cargo build --examples` first (plain `cargo test` does).
#![cfg(target_os = "linux")]

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod cli_support;
mod polykey_support;
use cli_support::{
    EX_DATAERR, EX_NOPERM, EX_USAGE, Fixture, PASSWORD, PROCESS_TIMEOUT, read_log, run_client,
};

/// What the client shows when it needs the password.
const PROMPT: &str = "Please enter the password: ";

/// What a client says when its prompt gives way to another process's token.
const GAVE_WAY: &str = "another process unlocked the session; going on with its token";

/// How often to look whether the client has turned echo off, once its prompt is on the screen.
/// The prompt is written just before the terminal is switched; a passing run looks once or
/// twice.
const TERMIOS_POLL: Duration = Duration::from_millis(1);

/// A pseudo-terminal pair, both ends close-on-exec so that no other process the tests start
/// keeps either open.
struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    fn open() -> io::Result<Self> {
        // SAFETY: plain libc calls on descriptors this function owns; `ptsname_r` writes at most
        // `name.len()` bytes, NUL included.
        unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if master < 0 {
                return Err(io::Error::last_os_error());
            }
            let master = File::from_raw_fd(master);
            if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut name = [0 as libc::c_char; 128];
            let error = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
            if error != 0 {
                return Err(io::Error::from_raw_os_error(error));
            }
            let slave = libc::open(
                CStr::from_ptr(name.as_ptr()).as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            if slave < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Self {
                master,
                slave: OwnedFd::from_raw_fd(slave),
            })
        }
    }
}

/// What the test has seen of one client run: everything the terminal showed (prompt, stdout
/// and stderr all go to it) and, once it is over, how the process ended.
#[derive(Default)]
struct Screen {
    text: Vec<u8>,
    /// The client closed its side of the terminal: it has exited.
    closed: bool,
    exit: Option<ExitStatus>,
}

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    fn prompts(&self) -> usize {
        self.text().matches(PROMPT).count()
    }

    fn over(&self) -> bool {
        self.closed && self.exit.is_some()
    }
}

/// Where the client's stdin comes from.
#[derive(Clone, Copy)]
enum Stdin {
    /// The terminal: an interactive run.
    Terminal,
    /// Nothing (`/dev/null`): a script's run, though a terminal is there to prompt on.
    Null,
}

/// A `client` process running on its own pseudo-terminal.
struct TerminalRun {
    args: Vec<String>,
    master: File,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    pid: libc::pid_t,
    agent_log: std::path::PathBuf,
}

impl TerminalRun {
    /// Starts `client ARGS` with a new pty as its controlling terminal, stdout and stderr, and
    /// `stdin` as said.
    fn start(fixture: &Fixture, args: &[&str], env: &[(&str, &str)], stdin: Stdin) -> Self {
        let command = fixture.client_command(args, env);
        Self::spawn(command, args, stdin, fixture.agent().log.clone())
    }

    /// Starts `command` (whose arguments are `args`) on a new pty; `agent_log` is shown when a
    /// check fails.
    fn spawn(
        mut command: std::process::Command,
        args: &[&str],
        stdin: Stdin,
        agent_log: std::path::PathBuf,
    ) -> Self {
        let pty = Pty::open().expect("open a pseudo-terminal");
        let slave = pty.slave.as_raw_fd();
        let terminal = || Stdio::from(pty.slave.try_clone().expect("duplicate the pty slave"));
        command
            .stdin(match stdin {
                Stdin::Terminal => terminal(),
                Stdin::Null => Stdio::null(),
            })
            .stdout(terminal())
            .stderr(terminal());
        // SAFETY: only async-signal-safe calls between fork and exec. The slave descriptor is
        // still open in the child here (close-on-exec closes it at the exec).
        unsafe {
            command.pre_exec(move || {
                // A new session without a terminal, then the pty as its controlling terminal:
                // /dev/tty, which the prompt opens, is then the pty.
                if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the client: {e}"));
        // The client holds the only slave descriptors now: when it exits, reading the master
        // ends (EIO).
        drop(command);
        drop(pty.slave);
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");

        let screen = Arc::new((Mutex::new(Screen::default()), Condvar::new()));
        let mut reader = pty.master.try_clone().expect("duplicate the pty master");
        let shown = screen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            loop {
                let read = reader.read(&mut buffer);
                let (lock, changed) = &*shown;
                let mut screen = lock.lock().unwrap_or_else(|e| e.into_inner());
                match read {
                    Ok(n) if n > 0 => screen.text.extend_from_slice(&buffer[..n]),
                    // 0, or EIO once the last slave descriptor is closed.
                    _ => screen.closed = true,
                }
                changed.notify_all();
                if screen.closed {
                    return;
                }
            }
        });
        let ended = screen.clone();
        std::thread::spawn(move || {
            let status = child.wait().expect("wait for the client");
            let (lock, changed) = &*ended;
            lock.lock().unwrap_or_else(|e| e.into_inner()).exit = Some(status);
            changed.notify_all();
        });

        Self {
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            master: pty.master,
            screen,
            pid,
            agent_log,
        }
    }

    /// Waits until `done` holds of the screen, for at most [`PROCESS_TIMEOUT`]: only a bound on
    /// a hang, never reached by a passing run.
    #[track_caller]
    fn wait_until(&self, what: &str, done: impl Fn(&Screen) -> bool) -> MutexGuard<'_, Screen> {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let (lock, changed) = &*self.screen;
        let mut screen = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !done(&screen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(screen);
                panic!("timed out waiting for {what}\n{}", self.report());
            }
            screen = changed
                .wait_timeout(screen, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        screen
    }

    /// Waits for the `n`th prompt, and then for the terminal to stop echoing: the prompt writes
    /// its prompt before it switches the terminal, and what is typed before the switch would be
    /// echoed and read as a canonical line (a Ctrl-D there is no end of input).
    #[track_caller]
    fn wait_for_prompt(&self, n: usize) {
        let screen = self.wait_until(&format!("prompt #{n}"), |screen| {
            screen.prompts() >= n || screen.over()
        });
        let prompts = screen.prompts();
        drop(screen);
        assert_eq!(
            prompts,
            n,
            "the client ended before prompt #{n}\n{}",
            self.report()
        );
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            // The master's termios requests act on the slave's settings.
            // SAFETY: `termios` is plain data, filled by tcgetattr on success.
            let mut termios: libc::termios = unsafe { std::mem::zeroed() };
            if unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut termios) } != 0 {
                panic!("tcgetattr: {}", io::Error::last_os_error());
            }
            if termios.c_lflag & (libc::ECHO | libc::ICANON) == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal still echoes after prompt #{n}\n{}",
                self.report()
            );
            std::thread::sleep(TERMIOS_POLL);
        }
    }

    /// Whether the terminal echoes what is typed, as a shell needs it to.
    fn echoes(&self) -> bool {
        // SAFETY: as in `wait_for_prompt`.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut termios) } != 0 {
            panic!("tcgetattr: {}", io::Error::last_os_error());
        }
        termios.c_lflag & libc::ECHO != 0 && termios.c_lflag & libc::ICANON != 0
    }

    /// Waits until the prompt on screen gives way, and checks the terminal was put back first.
    #[track_caller]
    fn wait_for_giving_way(&self) {
        let screen = self.wait_until("the prompt to give way", |screen| {
            screen.text().contains(GAVE_WAY) || screen.over()
        });
        drop(screen);
        // Said only once the terminal is back as it was.
        assert!(
            self.echoes(),
            "the terminal was left without echo\n{}",
            self.report()
        );
    }

    /// Types `bytes` on the keyboard.
    fn type_bytes(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot type on the terminal: {e}\n{}", self.report()));
    }

    /// Types `line` and Enter.
    fn type_line(&mut self, line: &str) {
        self.type_bytes(format!("{line}\n").as_bytes());
    }

    /// Waits for the client to exit and for all it showed.
    #[track_caller]
    fn finish(self) -> Finished {
        let screen = self.wait_until("the client to exit", Screen::over);
        let finished = Finished {
            code: screen.exit.and_then(|status| status.code()),
            status: screen.exit.map(|status| status.to_string()),
            text: screen.text(),
            prompts: screen.prompts(),
            args: self.args.clone(),
            agent_log: self.agent_log.clone(),
        };
        drop(screen);
        finished
    }

    /// Waits for the client to exit, and fails at once if it prompts instead: a client that
    /// must not prompt would otherwise wait for a password no one types.
    #[track_caller]
    fn finish_without_prompt(self) -> Finished {
        let prompted = {
            let screen = self.wait_until("the client to exit", |screen| {
                screen.over() || screen.prompts() > 0
            });
            screen.prompts() > 0
        };
        assert!(!prompted, "the client prompted\n{}", self.report());
        self.finish()
    }

    fn report(&self) -> String {
        let (lock, _) = &*self.screen;
        let screen = lock.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "--- client {} on a terminal: {}\n--- terminal\n{}\n{}",
            self.args.join(" "),
            screen
                .exit
                .map_or_else(|| "running".to_owned(), |status| status.to_string()),
            screen.text(),
            read_log(&self.agent_log)
        )
    }
}

impl Drop for TerminalRun {
    fn drop(&mut self) {
        let (lock, _) = &*self.screen;
        let screen = lock.lock().unwrap_or_else(|e| e.into_inner());
        if screen.exit.is_none() {
            // A failed test: end the client by its id. Its waiting thread records the exit
            // right after reaping it, so an unrecorded pid is this client's but for that instant.
            // SAFETY: a signal to one process this test started.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }
}

/// A client run on a terminal, over.
struct Finished {
    code: Option<i32>,
    status: Option<String>,
    text: String,
    prompts: usize,
    args: Vec<String>,
    agent_log: std::path::PathBuf,
}

impl Finished {
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    fn expect_shown(&self, text: &str) -> &Self {
        assert!(
            self.text.contains(text),
            "the terminal does not show {text:?}\n{self}"
        );
        self
    }

    #[track_caller]
    fn expect_not_shown(&self, text: &str) -> &Self {
        assert!(
            !self.text.contains(text),
            "the terminal shows {text:?}\n{self}"
        );
        self
    }

    #[track_caller]
    fn expect_prompts(&self, n: usize) -> &Self {
        assert_eq!(self.prompts, n, "unexpected number of prompts\n{self}");
        self
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "--- client {} on a terminal: {}",
            self.args.join(" "),
            self.status.as_deref().unwrap_or("running")
        )?;
        writeln!(f, "--- terminal\n{}", self.text)?;
        writeln!(f, "{}", read_log(&self.agent_log))
    }
}

/// A token the agent no longer takes, in the fixture's session file: unlocked there, then every
/// session locked by another client with its own session directory.
fn stale_session(fixture: &Fixture) -> String {
    fixture.unlock();
    let stale = fixture.token();
    let other = fixture.session_dir().with_file_name("other-session");
    let agent = fixture.agent().address.to_string();
    let password_file = fixture.password_file();
    let password_file = password_file.to_str().expect("a UTF-8 temporary path");
    let log = Some(fixture.agent().log.as_path());
    run_client(
        &agent,
        &other,
        &["--password-file", password_file, "unlock"],
        &[],
        log,
    )
    .expect_code(0);
    run_client(&agent, &other, &["lockall"], &[], log).expect_code(0);
    assert_eq!(
        fixture.token(),
        stale,
        "the other client touched this session"
    );
    stale
}

/// The session file's token, which the agent must take: a status run on it succeeds without a
/// prompt.
#[track_caller]
fn expect_live_session(fixture: &Fixture) -> String {
    let token = fixture.token();
    TerminalRun::start(fixture, &["status"], &[], Stdin::Null)
        .finish_without_prompt()
        .expect_code(0)
        .expect_shown("LIVE");
    token
}

#[test]
fn after_lock_status_prompts_once_and_succeeds() {
    let fixture = Fixture::new();
    fixture.unlock();
    let before = fixture.token();
    fixture.client(&["lock"]).expect_code(0);

    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(1)
        .expect_shown("LIVE")
        .expect_not_shown(PASSWORD);

    let after = expect_live_session(&fixture);
    assert_ne!(after, before, "the session file holds the locked token");
}

#[test]
fn a_wrong_then_right_password_prompts_twice_and_succeeds() {
    let fixture = Fixture::new();

    let mut run = TerminalRun::start(&fixture, &["echo", "hi", "there"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("not the password");
    run.wait_for_prompt(2);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(2)
        .expect_shown("Incorrect password")
        .expect_shown("hi there")
        .expect_not_shown("not the password")
        .expect_not_shown(PASSWORD);

    expect_live_session(&fixture);
}

#[test]
fn an_invalidated_token_prompts_once_and_the_call_is_replayed() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);

    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(1)
        .expect_shown("LIVE")
        .expect_not_shown(agent_session::Error::TOKEN_INVALID_MESSAGE);

    let renewed = expect_live_session(&fixture);
    assert_ne!(
        renewed, stale,
        "the session file still holds the dead token"
    );
}

/// A prompt already on screen gives way when another process unlocks the same session (an
/// `unlock` in another terminal): it stops reading, puts the terminal back, says why, and the
/// call goes on with that token, no password typed.
#[test]
fn a_prompt_gives_way_to_another_process_unlock() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);

    let run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    fixture.unlock();
    run.wait_for_giving_way();
    run.finish()
        .expect_code(0)
        .expect_prompts(1)
        .expect_shown(GAVE_WAY)
        .expect_shown("LIVE");

    let renewed = expect_live_session(&fixture);
    assert_ne!(
        renewed, stale,
        "the session file still holds the dead token"
    );
}

#[test]
fn end_of_input_at_the_prompt_exits_64() {
    let fixture = Fixture::new();

    // Ctrl-D on an empty line.
    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_bytes(b"\x04");
    run.finish()
        .expect_code(EX_USAGE)
        .expect_prompts(1)
        .expect_shown("\nno password given");
    assert!(!fixture.token_path().exists(), "a session file was made");

    // After a wrong password, too.
    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("not the password");
    run.wait_for_prompt(2);
    run.type_bytes(b"\x04");
    run.finish()
        .expect_code(EX_USAGE)
        .expect_prompts(2)
        .expect_shown("Incorrect password")
        .expect_shown("no password given");

    // An empty line gives up as well: a terminal that hung up reads as one.
    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("");
    run.finish()
        .expect_code(EX_USAGE)
        .expect_prompts(1)
        .expect_shown("no password given");
    assert!(!fixture.token_path().exists(), "a session file was made");
}

#[test]
fn unlock_prompts_until_the_password_is_right() {
    let fixture = Fixture::new();

    let mut run = TerminalRun::start(&fixture, &["unlock"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("not the password");
    run.wait_for_prompt(2);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(2)
        .expect_shown("Incorrect password")
        .expect_shown("unlocked");

    expect_live_session(&fixture);
}

#[test]
fn without_a_terminal_on_stdin_session_failures_exit_without_a_prompt() {
    let fixture = Fixture::new();
    let unattended = |args: &[&str], env: &[(&str, &str)]| {
        TerminalRun::start(&fixture, args, env, Stdin::Null).finish_without_prompt()
    };

    // No session.
    unattended(&["status"], &[])
        .expect_code(EX_NOPERM)
        .expect_shown(agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE);
    unattended(&["unlock"], &[])
        .expect_code(EX_USAGE)
        .expect_shown("no password given");

    // A wrong password given: refused, and no session made.
    unattended(&["status"], &[("AGENT_PASSWORD", "not the password")])
        .expect_code(EX_NOPERM)
        .expect_shown("Incorrect password");
    assert!(!fixture.token_path().exists(), "a session file was made");

    // A dead token on file.
    let stale = stale_session(&fixture);
    unattended(&["status"], &[])
        .expect_code(EX_DATAERR)
        .expect_shown(agent_session::Error::TOKEN_INVALID_MESSAGE);
    assert_eq!(fixture.token(), stale, "the session file changed");
}

#[test]
fn explicit_credentials_never_prompt_even_on_a_terminal() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);
    let interactive = |args: &[&str], env: &[(&str, &str)]| {
        TerminalRun::start(&fixture, args, env, Stdin::Terminal).finish_without_prompt()
    };

    interactive(&["status"], &[("AGENT_PASSWORD", "not the password")])
        .expect_code(EX_NOPERM)
        .expect_shown("Incorrect password");
    interactive(&["status"], &[("AGENT_TOKEN", &stale)])
        .expect_code(EX_DATAERR)
        .expect_shown(agent_session::Error::TOKEN_INVALID_MESSAGE);
    assert_eq!(fixture.token(), stale, "the session file changed");
}

#[test]
fn an_explicit_password_unlocks_before_the_command() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);
    let password_file = fixture.password_file();
    let password_file = password_file.to_str().expect("a UTF-8 temporary path");

    // Unattended, the dead token on file would fail the call (65): the password unlocks first.
    TerminalRun::start(
        &fixture,
        &["--password-file", password_file, "status"],
        &[],
        Stdin::Null,
    )
    .finish_without_prompt()
    .expect_code(0)
    .expect_shown("LIVE");
    let from_file = expect_live_session(&fixture);
    assert_ne!(from_file, stale, "the password file did not unlock");

    fixture.write_token(&stale);
    TerminalRun::start(
        &fixture,
        &["status"],
        &[("AGENT_PASSWORD", PASSWORD)],
        Stdin::Null,
    )
    .finish_without_prompt()
    .expect_code(0)
    .expect_shown("LIVE");
    let from_env = expect_live_session(&fixture);
    assert_ne!(from_env, stale, "AGENT_PASSWORD did not unlock");
}

/// `examples/polykey.rs` against a real Polykey agent: after a lock all, a command asks for
/// the password until the agent takes it, and its call is replayed.
mod polykey {
    use super::*;

    use crate::polykey_support::agent::PolykeyAgent;

    fn polykey(agent: &PolykeyAgent, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(cli_support::example("polykey"));
        command
            .args(args)
            .env("PK_NODE_PATH", &agent.node_path)
            .env("PK_CLIENT_PORT", agent.address.port().to_string())
            .env_remove("PK_PASSWORD")
            .env_remove("PK_TOKEN");
        command
    }

    #[test]
    fn after_lock_all_status_prompts_until_the_password_is_right() {
        let agent = PolykeyAgent::start();
        let mut unlock = polykey(&agent, &["agent", "unlock"]);
        let unlocked = unlock
            .env("PK_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(unlocked.status.success(), "{unlocked:?}");
        let token = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        let locked = polykey(&agent, &["agent", "lockall"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(locked.status.success(), "{locked:?}");
        // The token from before the lock all, as another terminal would still have it.
        std::fs::write(agent.node_path.join("token"), &token).unwrap();

        let args = ["agent", "status"];
        let no_log = agent.node_path.join("no-log");
        let mut run = TerminalRun::spawn(polykey(&agent, &args), &args, Stdin::Terminal, no_log);
        run.wait_for_prompt(1);
        run.type_line("not the password");
        run.wait_for_prompt(2);
        run.type_line(PASSWORD);
        run.finish()
            .expect_code(0)
            .expect_prompts(2)
            .expect_shown("the agent refused the password")
            .expect_shown(&agent.node_id)
            .expect_not_shown("not the password")
            .expect_not_shown(PASSWORD);
        let after = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        assert_ne!(after, token, "the new session is in the file");
    }

    /// The prompt on screen gives way to `polykey agent unlock` run in another terminal: the
    /// call goes on with that process's token.
    #[test]
    fn a_prompt_gives_way_to_another_process_unlock() {
        let agent = PolykeyAgent::start();
        let unlock = || {
            let unlocked = polykey(&agent, &["agent", "unlock"])
                .env("PK_PASSWORD", PASSWORD)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(unlocked.status.success(), "{unlocked:?}");
        };
        unlock();
        let stale = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        let locked = polykey(&agent, &["agent", "lockall"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(locked.status.success(), "{locked:?}");
        std::fs::write(agent.node_path.join("token"), &stale).unwrap();

        let args = ["agent", "status"];
        let no_log = agent.node_path.join("no-log");
        let run = TerminalRun::spawn(polykey(&agent, &args), &args, Stdin::Terminal, no_log);
        run.wait_for_prompt(1);
        unlock();
        run.wait_for_giving_way();
        run.finish()
            .expect_code(0)
            .expect_prompts(1)
            .expect_shown(GAVE_WAY)
            .expect_shown(&agent.node_id);
        let after = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        assert_ne!(after, stale, "the other process's session is in the file");
    }
}
