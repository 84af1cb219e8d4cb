//! A password prompt on the terminal that can give way: it stops reading when something else
//! (another process's token, say) arrives first, and puts the terminal back as it was.
//!
//! The prompt reads `/dev/tty` key by key with echo off (as `rpassword` does), on a blocking
//! thread that also watches a pipe: giving way writes to the pipe, and dropping the prompt
//! closes it, so the thread never outlives its prompt by more than one `poll` wake-up and the
//! terminal never stays silent.

use std::fs::File;
use std::io::{self, Read as _, Write as _};

use agent_session::{Session, Token};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex};

/// What the prompt ended with.
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
    /// prompt has given way and said so on the terminal.
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
        read = &mut reading => match joined(read)? {
            Some(password) => Ok(Prompted::Password(password)),
            // Only giving way stops it, and that is the other branch.
            None => Err(io::Error::other("the prompt stopped by itself")),
        },
        arrived = other => {
            // Stop the read, and wait for the terminal to be put back before anything is said.
            // A line typed at that very moment is dropped: the other one arrived first.
            give_way.write_all(b"x")?;
            let _ = reading.await;
            Ok(Prompted::GaveWay(arrived))
        }
    }
}

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

/// The terminal's settings as they were, put back when dropped.
struct Restore<'a> {
    tty: &'a File,
    before: termios::Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.tty, OptionalActions::Now, &self.before);
    }
}

const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const BACKSPACE: u8 = 0x08;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

/// Where the reader is in what the keys send.
#[derive(Clone, Copy)]
enum Keys {
    Typing,
    /// `ESC` came.
    Escape,
    /// Inside `ESC [` or `ESC O`, until its final byte.
    Sequence,
}

/// Reads one line from the terminal without echo. `None`: `wake` became readable (given way,
/// or the prompt dropped) before the line ended.
fn read_on_tty(prompt: &str, wake: &io::PipeReader) -> io::Result<Option<String>> {
    let mut tty = File::options().read(true).write(true).open("/dev/tty")?;
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let before = termios::tcgetattr(&tty)?;
    let mut raw = before.clone();
    raw.local_modes
        .remove(LocalModes::ECHO | LocalModes::ICANON | LocalModes::ECHONL | LocalModes::ISIG);
    raw.special_codes[SpecialCodeIndex::VMIN] = 1;
    raw.special_codes[SpecialCodeIndex::VTIME] = 0;
    termios::tcsetattr(&tty, OptionalActions::Now, &raw)?;
    let restore = Restore { tty: &tty, before };

    let mut line = Vec::new();
    let mut keys = Keys::Typing;
    loop {
        let mut fds = [
            PollFd::new(&tty, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if !fds[1].revents().is_empty() {
            drop(restore);
            // The prompt's line ends here: what is said next starts a line of its own.
            let _ = (&tty).write_all(b"\n");
            return Ok(None);
        }
        let mut key = [0u8; 1];
        if (&tty).read(&mut key)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // An escape sequence (an arrow key, `ESC [ A`): its letters are not the password's.
        match (keys, key[0]) {
            (Keys::Escape, b'[' | b'O') => keys = Keys::Sequence,
            (Keys::Escape, _) => keys = Keys::Typing,
            (Keys::Sequence, 0x40..=0x7e) => keys = Keys::Typing,
            (Keys::Sequence, _) => {}
            (Keys::Typing, key) => match key {
                ESC => keys = Keys::Escape,
                b'\n' | b'\r' => break,
                BACKSPACE | DEL => {
                    // A whole character: its UTF-8 continuation bytes, then its first.
                    while line.pop().is_some_and(|byte| byte & 0xc0 == 0x80) {}
                }
                CTRL_U => line.clear(),
                CTRL_D if line.is_empty() => {
                    drop(restore);
                    let _ = (&tty).write_all(b"\n");
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                CTRL_C => {
                    drop(restore);
                    let _ = (&tty).write_all(b"\n");
                    let _ = rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::INT,
                    );
                    return Err(io::ErrorKind::Interrupted.into());
                }
                byte if byte >= 0x20 || byte & 0x80 != 0 => line.push(byte),
                _ => {}
            },
        }
    }
    drop(restore);
    let _ = (&tty).write_all(b"\n");
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the password is not UTF-8"))
}
