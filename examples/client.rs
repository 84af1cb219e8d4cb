//! A small agent CLI: each run is a new process that shares the session file with the others.
//!
//! ```text
//! client [--agent ADDR] [--session-dir DIR] [--password-file FILE] [--lock-wait SECS] COMMAND
//!
//! COMMAND: unlock | lock | lockall | status | echo TEXT
//! ```
//!
//! **Unattended** when `AGENT_PASSWORD` or `AGENT_TOKEN` is set, a `--password-file` is given, or
//! stdin is not a terminal (scripts, CI, pipes): the CLI never prompts, and a session failure
//! prints the contract's message and exits 77 (no token) or 65 (invalid token). Explicit
//! credentials win over the session file: `AGENT_TOKEN` is sent instead of the file's token; a
//! password (`--password-file`, then `AGENT_PASSWORD`) unlocks first, and the command runs in
//! the new session.
//!
//! **Interactive** otherwise: a session failure asks for the password on the terminal
//! (`Please enter the password: `, not echoed), unlocks, saves the new token and retries the
//! call. A wrong password asks again; end of input at the prompt (Ctrl-D, or an empty line)
//! exits 64. `unlock` asks the same way.
//!
//! **Edges.** A session file that holds no valid token does not lock the user out: `unlock`
//! (and a password given any way) writes a new one over it, `lock` removes it; without a
//! password it exits 65 and says to run `unlock`. Another process holding the session file's
//! lock (a client stopped mid-write) never hangs a command: a refreshed token that cannot be
//! written within a second stays unwritten (with a warning; the command still succeeds), and
//! `unlock`/`lock` give up after `--lock-wait` seconds (default 10) with exit code 75.

use std::io::{self, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agent_session::agent::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use agent_session::{BoxError, Error, Session, SessionLayer, Token};
use tonic::transport::Channel;
use tower::Layer as _;

const USAGE: &str = "usage: client [--agent ADDR] [--session-dir DIR] [--password-file FILE] \
                     [--lock-wait SECS] (unlock | lock | lockall | status | echo TEXT)";

/// What the terminal shows when the CLI needs the password.
const PROMPT: &str = "Please enter the password: ";

/// sysexits: the command line was wrong, or no password was given.
const EX_USAGE: u8 = 64;
/// sysexits: the password file could not be read.
const EX_NOINPUT: u8 = 66;
/// sysexits: the agent could not be reached.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: the terminal could not be read.
const EX_IOERR: u8 = 74;
/// sysexits: the agent refused the password.
const EX_NOPERM: u8 = 77;
/// Anything else the agent answered with.
const EX_SOFTWARE: u8 = 70;

struct Options {
    agent: String,
    session_dir: PathBuf,
    password_file: Option<PathBuf>,
    lock_wait: Duration,
    command: Command,
}

enum Command {
    Unlock,
    Lock,
    LockAll,
    Status,
    Echo(String),
}

/// Why the CLI stopped: a message for the user and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            message: error.to_string(),
            code: u8::try_from(error.exit_code()).unwrap_or(1),
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        if let Some(error) = Error::from_status(&status) {
            // The prompt gave up: say why, rather than "re-authentication failed".
            if let Error::Reauthentication(source) = &error
                && let Some(unlock) = source.downcast_ref::<UnlockError>()
            {
                return unlock.into();
            }
            return error.into();
        }
        let code = match status.code() {
            tonic::Code::PermissionDenied => EX_NOPERM,
            tonic::Code::Unavailable => EX_UNAVAILABLE,
            _ => EX_SOFTWARE,
        };
        Self {
            message: status.message().to_owned(),
            code,
        }
    }
}

impl From<&UnlockError> for Failure {
    fn from(error: &UnlockError) -> Self {
        match error {
            UnlockError::NoPassword => Self {
                message: "no password given: end of input at the password prompt".into(),
                code: EX_USAGE,
            },
            UnlockError::Terminal(e) => Self {
                message: format!("cannot read the password from the terminal: {e}"),
                code: EX_IOERR,
            },
            UnlockError::Agent(status) => status.clone().into(),
            UnlockError::Token(e) => e.clone().into(),
        }
    }
}

/// Why unlocking gave no token. The re-authenticator returns it, and the CLI finds it again
/// behind [`Error::Reauthentication`] to choose its exit code.
#[derive(Debug, thiserror::Error)]
enum UnlockError {
    /// End of input at the prompt.
    #[error("no password given")]
    NoPassword,
    /// The terminal could not be read.
    #[error("cannot read the password from the terminal")]
    Terminal(#[source] io::Error),
    /// The agent refused the password, or failed.
    #[error("the agent did not unlock: {}", .0.message())]
    Agent(#[source] tonic::Status),
    /// The agent's token is not a bearer token.
    #[error(transparent)]
    Token(Error),
}

fn usage(message: &str) -> Failure {
    Failure {
        message: format!("{message}\n{USAGE}"),
        code: EX_USAGE,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run() -> Result<(), Failure> {
    let options = parse(std::env::args().skip(1))?;
    // One call per process: write every refreshed token, so the file always holds the newest.
    let session = Session::builder(agent_session::TokenFile::new(
        options.session_dir.join(agent_session::TOKEN_FILE_NAME),
    ))
    .lock_wait(
        options
            .lock_wait
            .min(agent_session::DEFAULT_REFRESH_LOCK_WAIT),
        options.lock_wait,
    )
    .build();
    let explicit_token = token_from_env()?;
    let password = given_password(&options)?;
    let interactive = explicit_token.is_none() && password.is_none() && io::stdin().is_terminal();
    if let Err(error) = session.start().await {
        // A file that holds no usable token must not lock the user out: whatever replaces or
        // removes it goes on without it; anything else says how to get out.
        let replaced = matches!(options.command, Command::Unlock | Command::Lock)
            || password.is_some()
            || explicit_token.is_some()
            || interactive;
        match error {
            Error::CorruptFile { .. }
                if explicit_token.is_some()
                    && password.is_none()
                    && !matches!(options.command, Command::Unlock | Command::Lock) =>
            {
                eprintln!("warning: {error}; using AGENT_TOKEN");
            }
            Error::CorruptFile { .. } if replaced => {
                eprintln!("warning: {error}; it will be replaced");
            }
            Error::CorruptFile { .. } => {
                return Err(Failure {
                    message: format!(
                        "{error}\nrun `client unlock` to start a new session (or set AGENT_PASSWORD)"
                    ),
                    code: u8::try_from(error.exit_code()).unwrap_or(1),
                });
            }
            error => return Err(error.into()),
        }
    }

    if let Command::Lock = options.command {
        // Locking is local: forget the token, remove the file.
        session.clear().await?;
        println!("locked");
        return Ok(());
    }

    let endpoint = Channel::from_shared(format!("http://{}", options.agent))
        .map_err(|e| usage(&format!("bad agent address {:?}: {e}", options.agent)))?;
    let channel = endpoint.connect().await.map_err(|e| Failure {
        message: format!("cannot reach the agent at {}: {e}", options.agent),
        code: EX_UNAVAILABLE,
    })?;

    if let Command::Unlock = options.command {
        let token = match password {
            Some(password) => unlock(channel, password).await,
            None if interactive => prompt_and_unlock(channel).await,
            None => {
                return Err(usage(
                    "no password given: pass --password-file or set AGENT_PASSWORD \
                     (stdin is not a terminal to ask on)",
                ));
            }
        };
        session
            .start_with_token(token.map_err(|e| Failure::from(&e))?)
            .await?;
        println!("unlocked");
        return Ok(());
    }

    if explicit_token.is_none()
        && let Some(password) = password
    {
        // A password given explicitly wins over the session file: unlock with it first.
        let token = unlock(channel.clone(), password)
            .await
            .map_err(|e| Failure::from(&e))?;
        session.start_with_token(token).await?;
    }
    let explicit_token = explicit_token.as_ref();
    if interactive {
        // The password channel has no session layer: an unlock needs no token.
        let password_channel = channel.clone();
        let layer = SessionLayer::new(session.clone())
            .reauthenticate_with(move || prompt_and_unlock(password_channel.clone()));
        let client = AgentServiceClient::new(layer.layer(channel));
        execute(client, &session, &options.command, explicit_token).await?;
    } else {
        let client = AgentServiceClient::new(SessionLayer::new(session.clone()).layer(channel));
        execute(client, &session, &options.command, explicit_token).await?;
    }
    // Refreshed tokens are durable when each call returns; flushing reports a failed write.
    match session.flush().await {
        // The command did what it was asked; the file keeps the token it had, still valid.
        Err(error @ Error::Locked { .. }) => {
            eprintln!("warning: the refreshed token was not saved: {error}");
            Ok(())
        }
        result => Ok(result?),
    }
}

/// Runs a command that calls the agent in the session (all but `unlock` and `lock`).
async fn execute<T>(
    mut client: AgentServiceClient<T>,
    session: &Session,
    command: &Command,
    explicit_token: Option<&Token>,
) -> Result<(), Failure>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    match command {
        Command::Unlock | Command::Lock => unreachable!("run handles them without a session"),
        Command::LockAll => {
            let request = with_token(EmptyMessage {}, explicit_token);
            client.sessions_lock_all(request).await?;
            session.clear().await?;
            println!("all sessions locked");
        }
        Command::Status => {
            let request = with_token(EmptyMessage {}, explicit_token);
            let status = client.agent_status(request).await?.into_inner().status;
            println!("{status}");
        }
        Command::Echo(text) => {
            let message = EchoMessage {
                challenge: text.clone(),
            };
            let echo = client.echo(with_token(message, explicit_token)).await?;
            println!("{}", echo.into_inner().challenge);
        }
    }
    Ok(())
}

/// Asks for the password on the terminal until the agent takes it, and returns the new token.
/// The session layer runs it on a session failure; `unlock` runs it when no password is given.
async fn prompt_and_unlock(channel: Channel) -> Result<Token, UnlockError> {
    loop {
        // rpassword blocks on /dev/tty: off the runtime's thread.
        let read = tokio::task::spawn_blocking(read_password)
            .await
            .map_err(|e| UnlockError::Terminal(io::Error::other(e)))?;
        let password = match read {
            // Ctrl-D on an empty line.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(UnlockError::NoPassword);
            }
            Err(e) => return Err(UnlockError::Terminal(e)),
            // rpassword reads a hung-up terminal's end of file as the end of the line: without
            // this the CLI would ask a closed terminal forever.
            Ok(password) if password.is_empty() => return Err(UnlockError::NoPassword),
            Ok(password) => password,
        };
        match unlock(channel.clone(), password).await {
            Err(UnlockError::Agent(status)) if status.code() == tonic::Code::PermissionDenied => {
                eprintln!("{}", status.message());
            }
            result => return result,
        }
    }
}

/// Asks for the password on the terminal (without echo).
fn read_password() -> io::Result<String> {
    let read = rpassword::prompt_password(PROMPT);
    if read
        .as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof)
    {
        // rpassword ends the line on Enter only: end it on Ctrl-D too, so that what the CLI
        // says next starts a line of its own.
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/tty")
            .and_then(|mut tty| tty.write_all(b"\n"));
    }
    read
}

/// Trades `password` for a session token over `channel`, which has no session layer.
async fn unlock(channel: Channel, password: String) -> Result<Token, UnlockError> {
    let reply = AgentServiceClient::new(channel)
        .session_unlock(PasswordMessage { password })
        .await
        .map_err(UnlockError::Agent)?
        .into_inner();
    Token::new(reply.token).map_err(|e| UnlockError::Token(e.into()))
}

/// A request that carries `AGENT_TOKEN` when it is set: explicit credentials win over the
/// session file's token (the session layer leaves a request's own `authorization` alone).
fn with_token<T>(message: T, token: Option<&Token>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token
        && let Ok(value) = token.header_value().to_str()
        && let Ok(mut value) = tonic::metadata::MetadataValue::try_from(value)
    {
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn token_from_env() -> Result<Option<Token>, Failure> {
    match std::env::var("AGENT_TOKEN") {
        Ok(value) if !value.trim().is_empty() => Token::new(value.trim())
            .map(Some)
            .map_err(|e| usage(&format!("AGENT_TOKEN is not a valid token: {e}"))),
        _ => Ok(None),
    }
}

/// The password given without asking: `--password-file`, then `AGENT_PASSWORD`.
fn given_password(options: &Options) -> Result<Option<String>, Failure> {
    if let Some(path) = &options.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| Failure {
            message: format!("cannot read the password file {}: {e}", path.display()),
            code: EX_NOINPUT,
        })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(std::env::var("AGENT_PASSWORD").ok())
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let mut agent = std::env::var("AGENT_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let mut session_dir = None;
    let mut password_file = None;
    let mut lock_wait = agent_session::DEFAULT_LOCK_WAIT;
    let command = loop {
        let Some(arg) = args.next() else {
            return Err(usage("no command given"));
        };
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--agent" => agent = value("--agent")?,
            "--session-dir" => session_dir = Some(PathBuf::from(value("--session-dir")?)),
            "--password-file" => password_file = Some(PathBuf::from(value("--password-file")?)),
            "--lock-wait" => {
                let text = value("--lock-wait")?;
                lock_wait = text
                    .parse::<f64>()
                    .ok()
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .ok_or_else(|| usage(&format!("--lock-wait takes seconds, not {text:?}")))?;
            }
            "-h" | "--help" => {
                return Err(Failure {
                    message: USAGE.into(),
                    code: 0,
                });
            }
            "unlock" => break Command::Unlock,
            "lock" => break Command::Lock,
            "lockall" => break Command::LockAll,
            "status" => break Command::Status,
            "echo" => {
                let text: Vec<String> = args.by_ref().collect();
                break Command::Echo(text.join(" "));
            }
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
    };
    if let Some(extra) = args.next() {
        return Err(usage(&format!("unexpected argument {extra:?}")));
    }
    Ok(Options {
        agent,
        session_dir: session_dir.unwrap_or_else(default_session_dir),
        password_file,
        lock_wait,
        command,
    })
}

/// `$AGENT_SESSION_DIR`, else `$XDG_STATE_HOME/agent-session`, else
/// `~/.local/state/agent-session`: per user, never shared.
fn default_session_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGENT_SESSION_DIR") {
        return dir.into();
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(state).join("agent-session");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/agent-session")
}
