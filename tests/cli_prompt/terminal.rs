//! The harness of the prompt tests: a client on a pseudo-terminal of its own, what it shows,
//! and the keys typed at it.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cli_support::{Fixture, PROCESS_TIMEOUT, read_log};

/// What the client shows when it needs the password.
pub(crate) const PROMPT: &str = "Please enter the password: ";

/// What a client says when its prompt gives way to another process's token.
pub(crate) const GAVE_WAY: &str = "another process unlocked the session; going on with its token";

/// How often to look whether the client has turned echo off, once its prompt is on the screen.
/// The prompt is written just before the terminal is switched; a passing run looks once or
/// twice.
pub(crate) const TERMIOS_POLL: Duration = Duration::from_millis(1);

/// A pseudo-terminal pair, both ends close-on-exec so that no other process the tests start
/// keeps either open.
pub(crate) struct Pty {
    master: File,
    slave: OwnedFd,
}

impl Pty {
    pub(crate) fn open() -> io::Result<Self> {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        // std opens with close-on-exec.
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(std::ffi::OsStr::from_bytes(name.as_bytes()))?;
        Ok(Self {
            master: File::from(master),
            slave: OwnedFd::from(slave),
        })
    }
}

/// Whether the terminal of `master` echoes and edits lines, as a shell needs it to.
fn cooked(master: &File) -> bool {
    use rustix::termios::LocalModes;
    // The master's termios requests act on the slave's settings.
    let modes = rustix::termios::tcgetattr(master)
        .unwrap_or_else(|e| panic!("tcgetattr: {e}"))
        .local_modes;
    modes.contains(LocalModes::ECHO) && modes.contains(LocalModes::ICANON)
}

/// Whether the terminal of `master` has echo and line editing both off, as a password prompt
/// sets it.
fn raw(master: &File) -> bool {
    use rustix::termios::LocalModes;
    let modes = rustix::termios::tcgetattr(master)
        .unwrap_or_else(|e| panic!("tcgetattr: {e}"))
        .local_modes;
    !modes.intersects(LocalModes::ECHO | LocalModes::ICANON)
}

/// What the test has seen of one client run: everything the terminal showed (prompt, stdout
/// and stderr all go to it) and, once it is over, how the process ended.
#[derive(Default)]
pub(crate) struct Screen {
    text: Vec<u8>,
    /// The client closed its side of the terminal: it has exited.
    closed: bool,
    exit: Option<ExitStatus>,
}

impl Screen {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    pub(crate) fn prompts(&self) -> usize {
        self.text().matches(PROMPT).count()
    }

    pub(crate) fn over(&self) -> bool {
        self.closed && self.exit.is_some()
    }
}

/// Where the client's stdin comes from.
#[derive(Clone, Copy)]
pub(crate) enum Stdin {
    /// The terminal: an interactive run.
    Terminal,
    /// Nothing (`/dev/null`): a script's run, though a terminal is there to prompt on.
    Null,
}

/// A `client` process running on its own pseudo-terminal.
pub(crate) struct TerminalRun {
    args: Vec<String>,
    master: File,
    screen: Arc<(Mutex<Screen>, Condvar)>,
    pid: rustix::process::Pid,
    agent_log: std::path::PathBuf,
}

impl TerminalRun {
    /// Starts `client ARGS` with a new pty as its controlling terminal, stdout and stderr, and
    /// `stdin` as said.
    pub(crate) fn start(
        fixture: &Fixture,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Stdin,
    ) -> Self {
        let command = fixture.client_command(args, env);
        Self::spawn(command, args, stdin, fixture.agent().log.clone())
    }

    /// Starts `command` (whose arguments are `args`) on a new pty; `agent_log` is shown when a
    /// check fails.
    pub(crate) fn spawn(
        mut command: std::process::Command,
        args: &[&str],
        stdin: Stdin,
        agent_log: std::path::PathBuf,
    ) -> Self {
        let pty = Pty::open().expect("open a pseudo-terminal");
        // The terminal the child takes as its controlling one: a descriptor of its own, closed
        // at the exec.
        let controlling = pty.slave.try_clone().expect("duplicate the pty slave");
        let terminal = || Stdio::from(pty.slave.try_clone().expect("duplicate the pty slave"));
        command
            .stdin(match stdin {
                Stdin::Terminal => terminal(),
                Stdin::Null => Stdio::null(),
            })
            .stdout(terminal())
            .stderr(terminal());
        // SAFETY: the one `unsafe` of the harness: std has no safe way to give a child a
        // controlling terminal. Between fork and exec only two system calls run (rustix's,
        // which allocate nothing and take no lock), on a descriptor still open in the child.
        unsafe {
            command.pre_exec(move || {
                // A new session without a terminal, then the pty as its controlling terminal:
                // /dev/tty, which the prompt opens, is then the pty.
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(&controlling)?;
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
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .expect("a pid");

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
    pub(crate) fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&Screen) -> bool,
    ) -> MutexGuard<'_, Screen> {
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
    pub(crate) fn wait_for_prompt(&self, n: usize) {
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
            if raw(&self.master) {
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
    pub(crate) fn echoes(&self) -> bool {
        cooked(&self.master)
    }

    /// Waits until the prompt on screen gives way, and checks the terminal was put back first.
    #[track_caller]
    pub(crate) fn wait_for_giving_way(&self) {
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
    pub(crate) fn type_bytes(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot type on the terminal: {e}\n{}", self.report()));
    }

    /// Types `line` and Enter.
    pub(crate) fn type_line(&mut self, line: &str) {
        self.type_bytes(format!("{line}\n").as_bytes());
    }

    /// Waits for the client to exit and for all it showed.
    #[track_caller]
    pub(crate) fn finish(self) -> Finished {
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
        // However it ended (a line, end of input, a wrong password, giving way), the client put
        // the terminal back: the pty keeps its settings after the client is gone.
        assert!(
            self.echoes(),
            "the client left the terminal without echo\n{finished}"
        );
        finished
    }

    /// Waits for the client to exit, and fails at once if it prompts instead: a client that
    /// must not prompt would otherwise wait for a password no one types.
    #[track_caller]
    pub(crate) fn finish_without_prompt(self) -> Finished {
        let prompted = {
            let screen = self.wait_until("the client to exit", |screen| {
                screen.over() || screen.prompts() > 0
            });
            screen.prompts() > 0
        };
        assert!(!prompted, "the client prompted\n{}", self.report());
        self.finish()
    }

    pub(crate) fn report(&self) -> String {
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
            let _ = rustix::process::kill_process(self.pid, rustix::process::Signal::KILL);
        }
    }
}

/// A client run on a terminal, over.
pub(crate) struct Finished {
    code: Option<i32>,
    status: Option<String>,
    text: String,
    prompts: usize,
    args: Vec<String>,
    agent_log: std::path::PathBuf,
}

impl Finished {
    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    pub(crate) fn expect_shown(&self, text: &str) -> &Self {
        assert!(
            self.text.contains(text),
            "the terminal does not show {text:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub(crate) fn expect_not_shown(&self, text: &str) -> &Self {
        assert!(
            !self.text.contains(text),
            "the terminal shows {text:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub(crate) fn expect_prompts(&self, n: usize) -> &Self {
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
