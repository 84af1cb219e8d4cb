//! A password prompt on the terminal that can give way: it stops reading when something else
//! (another process's token, say) arrives first, and puts the terminal back as it was.
//!
//! On Unix the prompt reads `/dev/tty` key by key with echo off (as `rpassword` does), on a
//! blocking thread that also watches a pipe: giving way writes to the pipe, and dropping the
//! prompt closes it, so the thread never outlives its prompt by more than one `poll` wake-up and
//! the terminal never stays silent.
//!
//! On Windows the prompt is `rpassword`'s: the console's echo is turned off while a line is read
//! from `CONIN$`. It does not give way: a console read cannot be woken by a pipe, and stopping it
//! would take console input of our own (`WriteConsoleInput`), which these examples do not do.

#[cfg(unix)]
use std::fs::File;
use std::io;
#[cfg(unix)]
use std::io::{Read as _, Write as _};
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt as _;

#[cfg(unix)]
use rustix::event::{PollFd, PollFlags, poll};
#[cfg(unix)]
use rustix::termios::{self, LocalModes, OptionalActions, QueueSelector, SpecialCodeIndex};
use tower_agent_session::{Session, Token};

/// What the prompt ended with.
#[cfg(unix)]
enum Prompted<T> {
    /// The line typed (empty for a bare Enter).
    Password(String),
    /// What arrived before a line was typed; the terminal has stopped reading.
    GaveWay(T),
}

/// What asking for the password came to.
pub enum Asked {
    /// The line typed (empty for a bare Enter).
    Password(String),
    /// Another process's token, which the session took while the prompt was on screen. The
    /// prompt has given way and said so on the terminal. (Never on Windows, whose prompt does
    /// not give way.)
    #[cfg_attr(windows, allow(dead_code))]
    Token(Token),
}

/// Shows `prompt` on the terminal and reads a password without echo.
///
/// With a `session` (a re-authenticator's prompt), the prompt gives way when the session
/// takes a token other than `failed` meanwhile (another process's unlock, seen through the
/// session file's watch): it stops reading, puts the terminal back, says why, and returns that
/// token. Without one (an `unlock` command), it only reads.
///
/// # Errors
///
/// As [`read_password_unless`].
#[cfg(unix)]
pub async fn ask(
    prompt: &'static str,
    session: Option<&Session>,
    failed: Option<&Token>,
) -> io::Result<Asked> {
    let arrived = async {
        match session {
            Some(session) => another_token(session, failed).await,
            None => std::future::pending().await,
        }
    };
    Ok(match read_password_unless(prompt, arrived).await? {
        Prompted::Password(password) => Asked::Password(password),
        Prompted::GaveWay(token) => {
            eprintln!("another process unlocked the session; going on with its token");
            Asked::Token(token)
        }
    })
}

/// Shows `prompt` on the console and reads a password without echo (Windows: never gives way;
/// see the module's docs).
///
/// # Errors
///
/// Why the console cannot be used, or [`io::ErrorKind::UnexpectedEof`] at end of input.
#[cfg(windows)]
pub async fn ask(
    prompt: &'static str,
    _session: Option<&Session>,
    _failed: Option<&Token>,
) -> io::Result<Asked> {
    let read = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
        .await
        .map_err(io::Error::other)?;
    read.map(Asked::Password)
}

#[cfg(unix)]
/// Shows `prompt` on the terminal and reads a password without echo, unless `other` is ready
/// first.
///
/// # Errors
///
/// [`io::ErrorKind::UnexpectedEof`] for end of input (Ctrl-D on an empty line, or a closed
/// terminal), [`io::ErrorKind::Interrupted`] for Ctrl-C (after which the process gets its
/// `SIGINT`), or why the terminal cannot be used.
async fn read_password_unless<T>(
    prompt: &'static str,
    other: impl Future<Output = T>,
) -> io::Result<Prompted<T>> {
    let (wake, mut give_way) = io::pipe()?;
    let mut reading = tokio::task::spawn_blocking(move || read_on_tty(prompt, &wake));
    let joined = |joined: Result<io::Result<Option<String>>, tokio::task::JoinError>| {
        joined.map_err(io::Error::other)?
    };
    tokio::select! {
        // A line that is in wins over what arrives at the same moment.
        biased;
        read = &mut reading => match joined(read)? {
            Some(password) => Ok(Prompted::Password(password)),
            // Only giving way stops it, and that is the other branch.
            None => Err(io::Error::other("the prompt stopped by itself")),
        },
        arrived = other => {
            // Stop the read, and wait for the terminal to be put back before anything is said.
            // The reader may have ended already (the pipe then is closed): nothing to stop.
            let _ = give_way.write_all(b"x");
            let _ = reading.await;
            Ok(Prompted::GaveWay(arrived))
        }
    }
}

#[cfg(unix)]
/// Waits until `session` holds a token other than `than`: one another process wrote (seen
/// through the session's watch of its file), or this process's other calls took. A change to
/// no token (a lock) is not one.
async fn another_token(session: &Session, than: Option<&Token>) -> Token {
    loop {
        let since = session.epoch();
        if let Some(token) = session.token()
            && Some(&token) != than
        {
            return token;
        }
        session.changed_since(since).await;
    }
}

#[cfg(unix)]
/// The terminal's settings as they were, put back when dropped.
struct Restore<'a> {
    tty: &'a File,
    before: termios::Termios,
}

#[cfg(unix)]
impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, OptionalActions::Now, &self.before);
    }
}

#[cfg(unix)]
const CTRL_C: u8 = 0x03;
#[cfg(unix)]
const CTRL_D: u8 = 0x04;
#[cfg(unix)]
const BACKSPACE: u8 = 0x08;
#[cfg(unix)]
const CTRL_U: u8 = 0x15;
#[cfg(unix)]
const ESC: u8 = 0x1b;
#[cfg(unix)]
const DEL: u8 = 0x7f;

#[cfg(unix)]
/// Where the reader is in what the keys send.
#[derive(Clone, Copy)]
enum Keys {
    Typing,
    /// `ESC` came.
    Escape,
    /// Inside `ESC [` or `ESC O`, until its final byte.
    Sequence,
}

#[cfg(unix)]
/// Reads one line from the terminal without echo. `None`: `wake` became readable (given way,
/// or the prompt dropped) before the line ended.
fn read_on_tty(prompt: &str, wake: &io::PipeReader) -> io::Result<Option<String>> {
    let mut out = File::options().write(true).open("/dev/tty")?;
    // Not blocking: another reader of the terminal may take a key `poll` said was there, and a
    // blocked read would no longer see `wake`.
    let input = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/tty")?;
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    let before = termios::tcgetattr(&input)?;
    let mut raw = before.clone();
    raw.local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ECHONL | LocalModes::ISIG);
    raw.special_codes[SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(&input, OptionalActions::Now, &raw)?;
    let restore = Restore {
        tty: &input,
        before,
    };
    // Ends the prompt before the line did: what was typed and not read yet is part of a
    // password, and must not reach whatever reads the terminal next (the shell). Then the
    // terminal is put back, and the prompt's line ended.
    let stop = |restore: Restore<'_>| {
        let _ = termios::tcflush(&input, QueueSelector::IFlush);
        drop(restore);
        let _ = (&out).write_all(b"\n");
    };

    let mut line = Vec::new();
    let mut keys = Keys::Typing;
    loop {
        let mut fds = [
            PollFd::new(&input, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if !fds[1].revents().is_empty() {
            stop(restore);
            return Ok(None);
        }
        let mut key = [0u8; 1];
        match (&input).read(&mut key) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        let key = key[0];
        // An escape sequence (an arrow key, `ESC [ A`): its letters are not the password's. A
        // lone `ESC` is dropped, and the key after it read as typed.
        match keys {
            Keys::Sequence => {
                if (0x40..=0x7e).contains(&key) {
                    keys = Keys::Typing;
                }
                continue;
            }
            Keys::Escape if matches!(key, b'[' | b'O') => {
                keys = Keys::Sequence;
                continue;
            }
            Keys::Escape | Keys::Typing => keys = Keys::Typing,
        }
        match key {
            ESC => keys = Keys::Escape,
            b'\n' | b'\r' => break,
            BACKSPACE | DEL => {
                // A whole character: its UTF-8 continuation bytes, then its first.
                while line.pop().is_some_and(|byte| byte & 0xc0 == 0x80) {}
            }
            CTRL_U => line.clear(),
            CTRL_D if line.is_empty() => {
                stop(restore);
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            CTRL_C => {
                stop(restore);
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::INT,
                );
                return Err(io::ErrorKind::Interrupted.into());
            }
            byte if byte >= 0x20 || byte & 0x80 != 0 => line.push(byte),
            _ => {}
        }
    }
    drop(restore);
    let _ = (&out).write_all(b"\n");
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the password is not UTF-8"))
}
