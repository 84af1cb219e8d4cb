//! A small agent CLI: each run is a new process that shares the session file with the others.
//!
//! ```text
//! client [--agent ADDR] [--session-dir DIR] [--password-file FILE] COMMAND
//!
//! COMMAND: unlock | lock | lockall | status | echo TEXT
//! ```
//!
//! The password comes from `--password-file`, then `AGENT_PASSWORD`, then a prompt on the
//! terminal. `AGENT_TOKEN`, when set, is sent instead of the session file's token. A session
//! failure prints the contract's message and exits 77 (no token) or 65 (invalid token).

use std::path::PathBuf;
use std::process::ExitCode;

use agent_session::agent::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use agent_session::{Error, Session, SessionLayer, SessionService, Token};
use tonic::transport::Channel;
use tower::ServiceBuilder;

const USAGE: &str = "usage: client [--agent ADDR] [--session-dir DIR] [--password-file FILE] \
                     (unlock | lock | lockall | status | echo TEXT)";

/// sysexits: the command line was wrong.
const EX_USAGE: u8 = 64;
/// sysexits: the agent could not be reached.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: the agent refused the password.
const EX_NOPERM: u8 = 77;
/// Anything else the agent answered with.
const EX_SOFTWARE: u8 = 70;

struct Options {
    agent: String,
    session_dir: PathBuf,
    password_file: Option<PathBuf>,
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
    let session = Session::builder(options.session_dir.join(agent_session::TOKEN_FILE_NAME))
        .always_write(true)
        .build();
    session.start().await?;

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
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(channel);
    let mut client = AgentServiceClient::new(service);
    let explicit_token = token_from_env()?;

    match &options.command {
        Command::Unlock => {
            let password = password(&options)?;
            unlock(&mut client, &session, password).await?;
            println!("unlocked");
        }
        Command::Lock => unreachable!("handled above"),
        Command::LockAll => {
            let request = with_token(EmptyMessage {}, explicit_token.as_ref());
            client.sessions_lock_all(request).await?;
            session.clear().await?;
            println!("all sessions locked");
        }
        Command::Status => {
            let request = with_token(EmptyMessage {}, explicit_token.as_ref());
            let status = client.agent_status(request).await?.into_inner().status;
            println!("{status}");
        }
        Command::Echo(text) => {
            let message = EchoMessage {
                challenge: text.clone(),
            };
            let echo = client
                .echo(with_token(message, explicit_token.as_ref()))
                .await?;
            println!("{}", echo.into_inner().challenge);
        }
    }
    // Refreshed tokens are durable when each call returns; flushing reports a failed write.
    session.flush().await?;
    Ok(())
}

/// Unlocks with `password` and starts the session with the new token (written to disk).
async fn unlock(
    client: &mut AgentServiceClient<SessionService<Channel>>,
    session: &Session,
    password: String,
) -> Result<(), Failure> {
    let reply = client
        .session_unlock(PasswordMessage { password })
        .await?
        .into_inner();
    let token = Token::new(reply.token).map_err(Error::from)?;
    session.start_with_token(token).await?;
    Ok(())
}

/// A request that carries `AGENT_TOKEN` when it is set: explicit credentials win over the
/// session file's token.
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

/// The password: `--password-file`, then `AGENT_PASSWORD`, then a prompt on the terminal.
fn password(options: &Options) -> Result<String, Failure> {
    if let Some(path) = &options.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| Failure {
            message: format!("cannot read the password file {}: {e}", path.display()),
            code: 66,
        })?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    if let Ok(password) = std::env::var("AGENT_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password("Please enter the password: ").map_err(|e| Failure {
        message: format!("no password: {e}"),
        code: EX_USAGE,
    })
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let mut agent = std::env::var("AGENT_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into());
    let mut session_dir = None;
    let mut password_file = None;
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
