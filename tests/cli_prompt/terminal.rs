//! The harness of the prompt tests: a client on a pseudo-terminal of its own, what it shows,
//! and the keys typed at it.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
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
    pid: libc::pid_t,
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
    pub(crate) fn echoes(&self) -> bool {
        // SAFETY: as in `wait_for_prompt`.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut termios) } != 0 {
            panic!("tcgetattr: {}", io::Error::last_os_error());
        }
        termios.c_lflag & libc::ECHO != 0 && termios.c_lflag & libc::ICANON != 0
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
            // SAFETY: a signal to one process this test started.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
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
