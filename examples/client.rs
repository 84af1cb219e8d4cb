//! A small agent CLI: each run is a new process that shares the session file with the others.
//!
//! ```text
//! client [--agent ADDR] [--session-dir DIR] [--password-file FILE] [--lock-wait SECS] COMMAND
//!
//! COMMAND: unlock | lock | lockall | status | echo TEXT...
//! ```
//!
//! `client --help` lists the commands, the flags, the environment and the exit codes. The
//! session file is `DIR/token`; without `--session-dir` or `AGENT_SESSION_DIR`, `DIR` is
//! `agent-session` in the user's runtime directory (`$XDG_RUNTIME_DIR`), else in their config
//! directory (`$XDG_CONFIG_HOME`, `~/.config`): never the current directory, where a session file
//! would land in whatever repository the user stands in.
//!
//! **Unattended** when `AGENT_PASSWORD` or `AGENT_TOKEN` is set, a `--password-file` is given, or
//! stdin is not a terminal (scripts, CI, pipes): the CLI never prompts, and a session failure
//! prints the contract's message, says what to do, and exits 77 (no token) or 65 (invalid
//! token). Explicit credentials win over the session file: `AGENT_TOKEN` is sent instead of the
//! file's token; a password (`--password-file`, then `AGENT_PASSWORD`) unlocks first, and the
//! command runs in the new session.
//!
//! **Interactive** otherwise: a session failure asks for the password on the terminal
//! (`Please enter the password: `, not echoed), unlocks, saves the new token and retries the
//! call. A wrong password asks again; end of input at the prompt (Ctrl-D, or an empty line)
//! exits 64. A prompt on screen gives way when another process unlocks the same session
//! meanwhile: it stops reading, says so, and the call goes on with that process's token.
//! `unlock` asks the same way, but never gives way: its meaning is to unlock.
//!
//! **Edges.** A session file that holds no valid token does not lock the user out: `unlock`
//! (and a password given any way) writes a new one over it, `lock` removes it; without a
//! password it exits 65 and says to run `unlock`. Another process holding the session file's
//! lock (a client stopped mid-write) never hangs a command: a refreshed token that cannot be
//! written within a second stays unwritten (with a warning; the command still succeeds), and
//! `unlock`/`lock` give up after `--lock-wait` seconds (default 10) with exit code 75.
//!
//! Errors print with their causes (`cannot reach the agent at …: transport error: tcp connect
//! error: Connection refused`), each cause once.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, IsTerminal as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use tonic::transport::Channel;
use tower::Layer as _;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use tower_agent_session::store::TokenStore;
use tower_agent_session::{
    BoxError, Error, KeyringBackend, KeyringStore, Session, SessionLayer, Token, TokenFile,
};

#[path = "support/prompt.rs"]
mod prompt;
#[path = "support/session_dir.rs"]
mod session_dir;
use prompt::Asked;

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

/// The way out of a session failure (no token, a dead one, a file without one).
const UNLOCK_HINT: &str = "run `client unlock` to start a new session, or set AGENT_PASSWORD";
/// The way out when the token refused was the one `AGENT_TOKEN` holds: the session file and a
/// password do not help while it is sent instead.
const TOKEN_HINT: &str = "AGENT_TOKEN holds a token the agent does not take: set a fresh one, \
                          or unset it and run `client unlock` (or set AGENT_PASSWORD)";

/// Everything `--help` says after the flags: what the user cannot find in them.
const AFTER_HELP: &str = "\
Environment:
  AGENT_PASSWORD     The password (after --password-file), never prompts: `unlock` trades it
                     for a token; other commands send the session file's token and use the
                     password only if the agent refuses it
  AGENT_TOKEN        A session token, sent instead of the session file's
  AGENT_ADDR         The agent's address, as --agent
  AGENT_SESSION_DIR  The session file's directory, as --session-dir
  AGENT_SESSION_STORE  Where the token lives, as --store
  AGENT_SESSION_KEYRING  The keyring, as --keyring

Session file:
  `unlock` saves the session token in DIR/token; every later run sends it and saves the
  refreshed token the agent answers with. DIR is --session-dir, else AGENT_SESSION_DIR, else
  agent-session in the user's runtime directory ($XDG_RUNTIME_DIR), else in their config
  directory ($XDG_CONFIG_HOME, or ~/.config).
  With --store keyring the token lives in the OS keyring instead (entry: service
  `tower-agent-session`, account DIR's canonical path), and DIR holds only its companion
  files (a version counter and the locks, nothing secret). No keyring to use exits 78; never a file.
  `status` says on stderr where the token lives and until when it is valid.

Prompting:
  With stdin a terminal and no AGENT_PASSWORD, AGENT_TOKEN or --password-file, a call the agent
  refuses for its session asks for the password, unlocks and is retried. The prompt gives way if
  another process unlocks the same session while it waits: the call goes on with that token.
  Otherwise the CLI never prompts: it exits 77 or 65 and says what to do.

Several processes at once:
  Processes whose calls the agent refuses together unlock once: one takes the session's
  re-authentication lock (DIR/token.reauth.lock) and unlocks; the others say they wait for it
  (with its pid) and go on with its token. A wait lasts at most a minute.

Exit codes:
   0  Success
  64  Usage error, or no password given (end of input at the prompt)
  65  TokenInvalid: the agent rejected the token (expired, or ended by lockall); or the session
      file, the keyring's entry or a token is not a valid token
  66  The password file cannot be read
  69  The agent cannot be reached
  70  The agent failed the call in another way
  73  The session file or its directory cannot be created
  74  The session file or the terminal cannot be read or written
  75  Another process holds the session file's lock past --lock-wait, or the keyring did not
      answer in time (10 s, an unlock prompt nobody answered; a write also waits --lock-wait
      for the lock); try again later
  77  TokenNotProvided: no session token to send; or the agent refused the password, or the
      session file is not readable or writable by this user
  78  --store keyring, and no keyring to use (no Secret Service on the bus, a locked keychain)";

/// Talks to an agent in a session kept in a session file shared by every run.
#[derive(Parser)]
#[command(name = "client", version, after_help = AFTER_HELP)]
struct Options {
    /// The agent's address
    #[arg(
        long,
        value_name = "ADDR",
        env = "AGENT_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    agent: String,
    /// The session file's directory [default: see Session file]
    #[arg(long, value_name = "DIR", env = "AGENT_SESSION_DIR")]
    session_dir: Option<PathBuf>,
    /// Read the password from FILE (without its trailing newline): `unlock` uses it; other
    /// commands only when the agent refuses the session file's token
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Seconds to wait for another process holding the session file's lock
    #[arg(long, value_name = "SECS", default_value_t = Seconds(tower_agent_session::TokenFile::DEFAULT_LOCK_WAIT))]
    lock_wait: Seconds,
    /// Where the session token lives: the session file, or the OS keyring
    #[arg(long, value_enum, value_name = "STORE", env = "AGENT_SESSION_STORE", default_value_t = StoreKind::File)]
    store: StoreKind,
    /// With --store keyring: keychain, credential-manager, secret-service or keyutils
    /// [default: the desktop's own]
    #[arg(long, value_name = "BACKEND", env = "AGENT_SESSION_KEYRING", value_parser = keyring_backend)]
    keyring: Option<KeyringBackend>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trade the password for a session token and save it in the session file
    Unlock,
    /// End this session here: remove the session file (the agent is not asked)
    Lock,
    /// End every session the agent has started, then remove the session file
    #[command(name = "lockall")]
    LockAll,
    /// Print the agent's status
    Status,
    /// Send TEXT to the agent and print what it answers
    Echo {
        /// The words to send, joined by spaces
        #[arg(
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        text: Vec<String>,
    },
}

/// Where the session token lives.
#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// The session file, DIR/token
    File,
    /// The OS keyring (see --keyring); DIR holds its companion files
    Keyring,
}

fn keyring_backend(name: &str) -> Result<KeyringBackend, String> {
    KeyringBackend::from_name(name).ok_or_else(|| {
        "not a keyring: keychain, credential-manager, secret-service or keyutils".to_owned()
    })
}

/// A duration given in seconds on the command line (fractions allowed).
#[derive(Clone, Copy)]
struct Seconds(Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(Seconds)
            .ok_or_else(|| "not a number of seconds".to_owned())
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// Why the CLI stopped: a message for the user and the exit code.
struct Failure {
    message: String,
    code: u8,
    /// A failure that a new session cures (exit 77 or 65): the user is told how to start one.
    needs_unlock: bool,
}

impl Failure {
    fn new(message: impl Into<String>, code: u8) -> Self {
        Self {
            message: message.into(),
            code,
            needs_unlock: false,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self {
            message: with_causes(&error),
            code: u8::try_from(error.exit_code()).unwrap_or(1),
            needs_unlock: matches!(
                error,
                Error::TokenNotProvided
                    | Error::TokenInvalid
                    | Error::CorruptFile { .. }
                    | Error::CorruptEntry { .. }
            ),
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
        Self::new(causes(status.message().to_owned(), status.source()), code)
    }
}

impl From<&UnlockError> for Failure {
    fn from(error: &UnlockError) -> Self {
        match error {
            UnlockError::NoPassword => Self::new(
                "no password given: end of input at the password prompt",
                EX_USAGE,
            ),
            UnlockError::Terminal(_) => Self::new(with_causes(error), EX_IOERR),
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

/// `error`'s message followed by its causes (see [`causes`]).
fn with_causes(error: &(dyn StdError + 'static)) -> String {
    causes(error.to_string(), error.source())
}

/// `message`, then each error of the `source` chain after a `: `. "transport error" alone hides
/// what the user needs ("Connection refused"). A cause whose text is already there is left out:
/// many errors repeat their source's message in their own.
fn causes(message: String, mut source: Option<&(dyn StdError + 'static)>) -> String {
    let mut text = message;
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// A usage error found after parsing, with the usage line under it.
fn usage(message: &str) -> Failure {
    Failure::new(
        format!("{message}\n\n{}", Options::command().render_usage()),
        EX_USAGE,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match Options::try_parse() {
        Ok(options) => options,
        Err(error) => {
            // `--help` and `--version` print on stdout and exit 0; a usage error prints on
            // stderr and exits 64, as every other usage error here (clap's own code is 2).
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(options: Options) -> Result<(), Failure> {
    let explicit_token = token_from_env()?;
    let token_given = explicit_token.is_some();
    run_command(options, explicit_token)
        .await
        .map_err(|mut failure| {
            if failure.needs_unlock {
                let hint = if token_given { TOKEN_HINT } else { UNLOCK_HINT };
                failure.message = format!("{}\n{hint}", failure.message);
            }
            failure
        })
}

/// A session on `store`, saying so while it waits for another process's unlock.
fn session_on(store: impl TokenStore) -> Session {
    Session::builder(store)
        .on_reauth_wait(|pid| match pid {
            Some(pid) => eprintln!("waiting for process {pid} to unlock the session…"),
            None => eprintln!("waiting for another process to unlock the session…"),
        })
        .build()
}

async fn run_command(options: Options, explicit_token: Option<Token>) -> Result<(), Failure> {
    let Some(session_dir) = options
        .session_dir
        .clone()
        .or_else(session_dir::default_session_dir)
    else {
        return Err(usage(
            "no session directory: pass --session-dir or set AGENT_SESSION_DIR \
             (there is neither a runtime directory nor a home directory)",
        ));
    };
    let lock_wait = options.lock_wait.0;
    // Tokens live until they expire (the example agent's, the default): a refresh that expires
    // later than the file's is written, and `flush` waits for it before the process exits.
    let waits = |file: TokenFile| {
        file.refresh_lock_wait(lock_wait.min(TokenFile::DEFAULT_REFRESH_LOCK_WAIT))
            .lock_wait(lock_wait)
    };
    let (session, store) = match options.store {
        StoreKind::File => {
            let file = waits(TokenFile::new(session_dir.join(TokenFile::NAME)));
            let store = format!("the session file {}", file.path().display());
            (session_on(file), store)
        }
        StoreKind::Keyring => {
            let backend = options.keyring.unwrap_or(KeyringBackend::native());
            // One entry for each session directory, as there is one session file: the
            // companion files there are its locks and version.
            let keyring = KeyringStore::in_dir(backend, "tower-agent-session", &session_dir)?
                .companion_waits(waits);
            let store = format!(
                "the {backend}, service \"{}\", account \"{}\"",
                keyring.service(),
                keyring.account()
            );
            (session_on(keyring), store)
        }
    };
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
            Error::CorruptFile { .. } | Error::CorruptEntry { .. }
                if explicit_token.is_some()
                    && password.is_none()
                    && !matches!(options.command, Command::Unlock | Command::Lock) =>
            {
                eprintln!("warning: {error}; using AGENT_TOKEN");
            }
            Error::CorruptFile { .. } | Error::CorruptEntry { .. } if replaced => {
                eprintln!("warning: {error}; it will be replaced");
            }
            // Anything else stops here; a corrupt file with the way out of it.
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
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::new(
            format!(
                "cannot reach the agent at {}: {}",
                options.agent,
                with_causes(&e)
            ),
            EX_UNAVAILABLE,
        )
    })?;

    if let Command::Unlock = options.command {
        let token = match password {
            Some(password) => unlock(channel, password).await,
            None if interactive => prompt_and_unlock(channel, None).await,
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

    let explicit_token = explicit_token.as_ref();
    // The session file's token is tried first; the password (given, or typed at the prompt)
    // is used only when the agent refuses the session, and then once for every process whose
    // calls fail together (the session's re-authentication).
    let password_channel = channel.clone();
    let reauthenticate: Option<Box<dyn Fn() -> UnlockFuture + Send + Sync>> =
        match (explicit_token, password) {
            (Some(_), _) => None,
            (None, Some(password)) => Some(Box::new(move || {
                eprintln!("the agent refused the session; unlocking with the password");
                Box::pin(unlock(password_channel.clone(), password.clone()))
            })),
            (None, None) if interactive => {
                let session = session.clone();
                Some(Box::new(move || {
                    Box::pin(prompt_and_unlock(
                        password_channel.clone(),
                        Some(session.clone()),
                    ))
                }))
            }
            (None, None) => None,
        };
    match reauthenticate {
        Some(reauthenticate) => {
            let layer = SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate);
            let client = AgentServiceClient::new(layer.layer(channel));
            execute(client, &session, &options.command, explicit_token, &store).await?;
        }
        None => {
            let client = AgentServiceClient::new(SessionLayer::new(session.clone()).layer(channel));
            execute(client, &session, &options.command, explicit_token, &store).await?;
        }
    }
    // Waits for the refreshed token's write, written behind the call, and reports a failure.
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
    store: &str,
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
            // The agent's lock all and the file's removal as one step: no other process
            // re-authenticates in between (its token would go with the file).
            session
                .clear_after(async { client.sessions_lock_all(request).await })
                .await?;
            println!("all sessions locked");
        }
        Command::Status => {
            let request = with_token(EmptyMessage {}, explicit_token);
            let status = client.agent_status(request).await?.into_inner().status;
            println!("{status}");
            // For the user, beside the status a script reads.
            let valid = match session.token().and_then(|token| token.expires_at()) {
                Some(exp) => format!("valid until {}", humantime::format_rfc3339_seconds(exp)),
                None => "with no expiry in it".to_owned(),
            };
            let held = if explicit_token.is_some() {
                "AGENT_TOKEN"
            } else {
                store
            };
            eprintln!("session: the token in {held}, {valid}");
        }
        Command::Echo { text } => {
            let message = EchoMessage {
                challenge: text.join(" "),
            };
            let echo = client.echo(with_token(message, explicit_token)).await?;
            println!("{}", echo.into_inner().challenge);
        }
    }
    Ok(())
}

/// Asks for the password on the terminal until the agent takes it, and returns the new token.
///
/// The session layer runs it on a session failure, with `session`: the prompt then gives way
/// to a token another process writes meanwhile (an `unlock` in another terminal), and the call
/// goes on with that token. `unlock` runs it without, as that command's meaning is to unlock.
async fn prompt_and_unlock(
    channel: Channel,
    session: Option<Session>,
) -> Result<Token, UnlockError> {
    // The token that failed (or none): another one ends the prompt.
    let failed = session.as_ref().and_then(Session::token);
    loop {
        let password = match prompt::ask(PROMPT, session.as_ref(), failed.as_ref()).await {
            Ok(Asked::Token(token)) => return Ok(token),
            Ok(Asked::Password(password)) if !password.is_empty() => password,
            // An empty line.
            Ok(Asked::Password(_)) => return Err(UnlockError::NoPassword),
            // Ctrl-D on an empty line, or a terminal that hung up.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(UnlockError::NoPassword);
            }
            Err(e) => return Err(UnlockError::Terminal(e)),
        };
        match unlock(channel.clone(), password).await {
            Err(UnlockError::Agent(status)) if status.code() == tonic::Code::PermissionDenied => {
                eprintln!("{}", status.message());
            }
            result => return result,
        }
    }
}

/// Trades `password` for a session token over `channel`, which has no session layer.
/// What a re-authenticator of this client returns.
type UnlockFuture = std::pin::Pin<Box<dyn Future<Output = Result<Token, UnlockError>> + Send>>;

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
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                format!("cannot read the password file {}: {e}", path.display()),
                EX_NOINPUT,
            )
        })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(std::env::var("AGENT_PASSWORD").ok())
}
