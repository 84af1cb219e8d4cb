//! A Polykey client with Polykey's habits, over `tower-agent-session`: each run is a new process that
//! shares the session file `<node path>/token` with the others, as Polykey's own CLI does.
//!
//! ```text
//! polykey [--node-path DIR] [--client-host HOST] [--client-port PORT] [--cert FILE] COMMAND
//!
//! COMMAND: agent status | agent unlock | agent lock | agent lockall | vaults list
//! ```
//!
//! The agent is reached over TLS pinned to its certificate file (`--cert`, by default
//! `<node path>/root-cert.pem`, which the test agent writes). The environment stands in for the
//! flags: `PK_NODE_PATH`, `PK_CLIENT_HOST` (default `127.0.0.1`), `PK_CLIENT_PORT`, and for
//! unattended use `PK_PASSWORD` (a command other than `agent unlock` sends the session file's
//! token, and unlocks with the password only when the agent refuses it, once for every process
//! refused together) or `PK_TOKEN` (sent instead of the session file's token).
//!
//! Interactive (stdin a terminal, neither variable set): a session failure asks for the password
//! (`Please enter the password: `, not echoed), until the agent takes it, and replays the call.
//! The prompt gives way when another process unlocks the same session meanwhile: it stops
//! reading, says so, and the call goes on with that process's token.
//! Unattended, a session failure exits 77 (no token) or 65 (invalid token, as after a lock all).

use std::io::{self, IsTerminal as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use tonic::transport::Channel;
use tower::Layer as _;
use tower_agent_session::store::TokenStore;
use tower_agent_session::{
    BoxError, Error, KeyringBackend, KeyringStore, Polykey, Session, SessionLayer, Token, TokenFile,
};

#[path = "support/prompt.rs"]
mod prompt;
use prompt::Asked;

#[path = "../tests/polykey_support/mod.rs"]
mod polykey_support;
use polykey_support::{ClientServiceClient, EmptyMessage, tls, with_password};

const USAGE: &str = "usage: polykey [--node-path DIR] [--client-host HOST] [--client-port PORT] \
                     [--cert FILE] (agent (status | unlock | lock | lockall) | vaults list)";
/// What `--help` prints: the usage, then what the flags and the environment do, and what each
/// exit code means.
const HELP: &str = "\
A Polykey client: each run shares the session file NODE_PATH/token with the others.

Commands:
  agent status    Print the agent's status
  agent unlock    Trade the password for a session token and save it in the session file
  agent lock      Remove the session file (the agent is not asked)
  agent lockall   End every session the agent has started, then remove the session file
  vaults list     List the vaults

Options:
  --node-path DIR     The node path, holding the session file [env: PK_NODE_PATH]
  --client-host HOST  The agent's IP address [env: PK_CLIENT_HOST; default: 127.0.0.1]
  --client-port PORT  The agent's port [env: PK_CLIENT_PORT]
  --cert FILE         The agent's certificate to pin [default: NODE_PATH/root-cert.pem]
  --store STORE       Where the token lives: file (NODE_PATH/token) or keyring (the OS keyring;
                      NODE_PATH holds its companion files, nothing secret) [env: PK_STORE;
                      default: file]
  --keyring BACKEND   With --store keyring: keychain, credential-manager, secret-service or
                      keyutils [env: PK_KEYRING; default: the desktop's own]
  -h, --help          Print this help

Environment:
  PK_PASSWORD  The password; never prompts. `agent unlock` trades it for a token; other
               commands send the session file's token and unlock with the password only if
               the agent refuses it (once for all the processes refused together)
  PK_TOKEN     A session token, sent instead of the session file's

With stdin a terminal and neither variable set, a call refused for its session asks for the
password, unlocks and is retried. The prompt gives way if another process unlocks the same
session while it waits: the call goes on with that token.

Exit codes:
   0  Success
  64  Usage error, or no password given
  65  The agent refused the token (ended by lockall) or the password; or the session file or
      the keyring's entry holds no valid token
  69  The agent cannot be reached
  70  The agent failed the call in another way
  73  The session file or its directory cannot be created
  74  The session file cannot be read or written
  75  Another process holds the session file's lock, or the keyring did not answer within
      10 s; try again later
  77  No session token to send; or unlocking at the prompt failed; or the session file is not
      readable or writable by this user
  78  --store keyring, and no keyring to use (no Secret Service on the bus, a locked keychain)";
const PROMPT: &str = "Please enter the password: ";

/// sysexits: the command line was wrong, or no password was given.
const EX_USAGE: u8 = 64;
/// sysexits: the agent could not be reached.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: anything else the agent answered with.
const EX_SOFTWARE: u8 = 70;
/// sysexits: the agent refused the password.
const EX_NOPERM: u8 = 77;
/// What the prompt says when it gets no password (end of input, or an empty line).
const NO_PASSWORD: &str = "no password given";

enum Command {
    Status,
    Unlock,
    Lock,
    LockAll,
    VaultsList,
}

struct Options {
    node_path: PathBuf,
    /// Where the token lives: the session file (`None`), or this keyring.
    keyring: Option<KeyringBackend>,
    address: SocketAddr,
    cert: PathBuf,
    command: Command,
}

/// Why the command stopped: a message and an exit code.
struct Failure(String, u8);

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self(
            error.to_string(),
            u8::try_from(error.exit_code()).unwrap_or(1),
        )
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        match Error::from_status_with(&status, &Polykey) {
            // The prompt gave up, or the unlock failed: the message says why.
            Some(Error::Reauthentication(cause)) => {
                let code = match status.code() {
                    tonic::Code::Unavailable => EX_UNAVAILABLE,
                    _ if cause.to_string() == NO_PASSWORD => EX_USAGE,
                    _ => EX_NOPERM,
                };
                Self(status.message().to_owned(), code)
            }
            Some(error) => {
                let hint = "\nrun `polykey agent unlock`, or set PK_PASSWORD";
                Self(
                    format!("{error}{hint}"),
                    u8::try_from(error.exit_code()).unwrap_or(1),
                )
            }
            None if status.code() == tonic::Code::Unavailable => Self(
                format!("cannot reach the agent: {}", status.message()),
                EX_UNAVAILABLE,
            ),
            None => Self(status.message().to_owned(), EX_SOFTWARE),
        }
    }
}

fn usage(message: &str) -> Failure {
    Failure(format!("{message}\n{USAGE}"), EX_USAGE)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        // `--help` ends the run with code 0: its text is the output asked for.
        Err(Failure(message, 0)) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(Failure(message, code)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

/// Polykey's session on `store`: its tokens have no `exp`, so each new one is written and the
/// store holds the newest.
fn session_on(store: impl TokenStore) -> Session {
    Session::builder(store)
        .failures(Polykey)
        .start_on_password(true)
        .build()
}

async fn run() -> Result<(), Failure> {
    let options = parse(std::env::args().skip(1))?;
    let password = std::env::var("PK_PASSWORD").ok();
    let token = match std::env::var("PK_TOKEN") {
        Ok(text) if !text.trim().is_empty() => Some(
            Token::new(text.trim()).map_err(|e| usage(&format!("PK_TOKEN is not a token: {e}")))?,
        ),
        _ => None,
    };
    let interactive = password.is_none() && token.is_none() && io::stdin().is_terminal();
    let (session, held) = match options.keyring {
        None => {
            let file = TokenFile::new(options.node_path.join("token"));
            let held = format!("the session file {}", file.path().display());
            (session_on(file), held)
        }
        Some(backend) => {
            // One entry for each node path, as there is one session file.
            let keyring =
                KeyringStore::in_dir(backend, "tower-agent-session polykey", &options.node_path)?;
            let held = format!(
                "the {backend}, service \"{}\", account \"{}\"",
                keyring.service(),
                keyring.account()
            );
            (session_on(keyring), held)
        }
    };
    if let Err(error) = session.start().await {
        // A file that holds no token must not lock the user out: whatever replaces it, removes
        // it, or does without it goes on.
        let corrupt = matches!(
            error,
            Error::CorruptFile { .. } | Error::CorruptEntry { .. }
        );
        match (corrupt, &options.command) {
            (true, Command::Unlock | Command::Lock) => {}
            (true, _) if password.is_some() || interactive => {}
            (true, _) if token.is_some() => {
                eprintln!("warning: {error}; using PK_TOKEN");
            }
            (true, _) => {
                let hint = "run `polykey agent unlock` to start a new session, or set PK_PASSWORD";
                let code = u8::try_from(error.exit_code()).unwrap_or(1);
                return Err(Failure(format!("{error}\n{hint}"), code));
            }
            _ => return Err(error.into()),
        }
        if token.is_none() {
            eprintln!("warning: {error}; it will be replaced");
        }
    }
    if let Command::Lock = options.command {
        session.clear().await?;
        println!("locked");
        return Ok(());
    }
    let channel = tls::connect(options.address, &options.cert)
        .await
        .map_err(|e| {
            Failure(
                format!("cannot reach the agent: {}", chain(&*e)),
                EX_UNAVAILABLE,
            )
        })?;

    // The request's own credentials: PK_TOKEN, if set. Otherwise the session's token goes, and
    // the password (PK_PASSWORD, or typed at the prompt) is the re-authenticator's.
    let credentials = |request: &mut tonic::metadata::MetadataMap| {
        if let Some(token) = &token
            && let Ok(value) = token.header_value().to_str()
            && let Ok(mut value) = tonic::metadata::AsciiMetadataValue::try_from(value)
        {
            value.set_sensitive(true);
            request.insert("authorization", value);
        }
    };
    let request = || {
        let mut request = tonic::Request::new(EmptyMessage {});
        credentials(request.metadata_mut());
        request
    };

    if let Command::Unlock = options.command {
        let token = match &password {
            Some(password) => unlock(channel, password.clone()).await?,
            None if interactive => prompt_and_unlock(channel, None).await.map_err(|e| {
                let code = if e.to_string() == NO_PASSWORD {
                    EX_USAGE
                } else {
                    EX_NOPERM
                };
                Failure(e.to_string(), code)
            })?,
            None if token.is_some() => {
                return Err(usage(
                    "unlock needs the password: set PK_PASSWORD, not PK_TOKEN",
                ));
            }
            None => {
                return Err(usage(
                    "no password: set PK_PASSWORD (stdin is not a terminal)",
                ));
            }
        };
        session.start_with_token(token).await?;
        println!("unlocked");
        return Ok(());
    }
    let password_channel = channel.clone();
    let reauthenticate: Option<Box<dyn Fn() -> Unlocking + Send + Sync>> = match &password {
        Some(password) if token.is_none() => {
            let password = password.clone();
            Some(Box::new(move || {
                eprintln!("the agent refused the session; unlocking with the password");
                let (channel, password) = (password_channel.clone(), password.clone());
                Box::pin(async move {
                    unlock(channel, password)
                        .await
                        .map_err(|Failure(message, _)| BoxError::from(message))
                })
            }))
        }
        None if interactive => {
            let session = session.clone();
            Some(Box::new(move || {
                Box::pin(prompt_and_unlock(
                    password_channel.clone(),
                    Some(session.clone()),
                ))
            }))
        }
        _ => None,
    };
    let run = async {
        match reauthenticate {
            Some(reauthenticate) => {
                let layer = SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate);
                execute(
                    ClientServiceClient::new(layer.layer(channel)),
                    &options.command,
                    request,
                )
                .await
            }
            None => {
                let client = ClientServiceClient::new(
                    tower_agent_session::SessionLayer::new(session.clone()).layer(channel),
                );
                execute(client, &options.command, request).await
            }
        }
    };
    if let Command::LockAll = options.command {
        // The agent's lock all and the file's removal as one step for every process.
        session.clear_after(run).await?;
    } else {
        run.await?;
    }
    match session.flush().await {
        Err(error @ Error::Locked { .. }) => eprintln!("warning: token not saved: {error}"),
        result => result?,
    }
    if let Command::Status = options.command {
        // For the user, beside the status a script reads.
        let valid = match session.token().and_then(|token| token.expires_at()) {
            Some(exp) => format!("valid until {}", humantime::format_rfc3339_seconds(exp)),
            None => "with no expiry in it".to_owned(),
        };
        let held = if token.is_some() { "PK_TOKEN" } else { &held };
        eprintln!("session: the token in {held}, {valid}");
    }
    Ok(())
}

/// Runs a command that calls the agent in the session.
async fn execute<T>(
    mut client: ClientServiceClient<T>,
    command: &Command,
    request: impl Fn() -> tonic::Request<EmptyMessage>,
) -> Result<(), Failure>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    match command {
        Command::Status => {
            let info = client.agent_status(request()).await?.into_inner();
            println!("status\tLIVE\nnodeId\t{}\npid\t{}", info.node_id, info.pid);
        }
        Command::LockAll => {
            client.agent_lock_all(request()).await?;
            println!("all sessions locked");
        }
        Command::VaultsList => {
            let mut vaults = client.vaults_list(request()).await?.into_inner();
            while let Some(vault) = vaults.message().await? {
                println!("{}\t{}", vault.vault_name, vault.vault_id);
            }
        }
        Command::Unlock | Command::Lock => unreachable!("run handles them"),
    }
    Ok(())
}

/// What a re-authenticator of this client returns.
type Unlocking = std::pin::Pin<Box<dyn Future<Output = Result<Token, BoxError>> + Send>>;

/// Trades `password` for a session token over `channel`, which has no session layer.
async fn unlock(channel: Channel, password: String) -> Result<Token, Failure> {
    let reply = ClientServiceClient::new(channel)
        .agent_unlock(with_password(EmptyMessage {}, &password))
        .await?;
    // The token comes in the answer's headers, read as the layer reads a refresh.
    Token::from_metadata(reply.metadata())
        .map_err(Error::from)?
        .ok_or_else(|| Failure("the agent answered without a token".into(), EX_SOFTWARE))
}

/// Asks for the password until the agent takes it; the layer runs it on a session failure,
/// with `session`: the prompt then gives way to a token another process writes meanwhile (an
/// `agent unlock` in another terminal), and the call goes on with that token.
async fn prompt_and_unlock(channel: Channel, session: Option<Session>) -> Result<Token, BoxError> {
    // The token that failed (or none): another one ends the prompt.
    let failed = session.as_ref().and_then(Session::token);
    loop {
        let password = match prompt::ask(PROMPT, session.as_ref(), failed.as_ref()).await {
            Ok(Asked::Token(token)) => return Ok(token),
            Ok(Asked::Password(password)) if !password.is_empty() => password,
            Ok(Asked::Password(_)) => return Err(NO_PASSWORD.into()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(NO_PASSWORD.into()),
            Err(e) => return Err(e.into()),
        };
        match unlock(channel.clone(), password).await {
            Ok(token) => return Ok(token),
            // A wrong password is refused as a session failure: ask again.
            Err(Failure(_, 65 | 77)) => eprintln!("the agent refused the password"),
            Err(Failure(message, _)) => return Err(message.into()),
        }
    }
}

/// An error and its sources, one after the other: "connection refused" is what a user needs.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let env = |name: &str| std::env::var(name).ok();
    let mut node_path = env("PK_NODE_PATH").map(PathBuf::from);
    let mut host = env("PK_CLIENT_HOST").unwrap_or_else(|| "127.0.0.1".into());
    let mut port = env("PK_CLIENT_PORT");
    let mut cert = None;
    let mut store = env("PK_STORE").unwrap_or_else(|| "file".into());
    let mut keyring = env("PK_KEYRING");
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--node-path" => node_path = Some(value("--node-path")?.into()),
            "--client-host" => host = value("--client-host")?,
            "--client-port" => port = Some(value("--client-port")?),
            "--cert" => cert = Some(PathBuf::from(value("--cert")?)),
            "--store" => store = value("--store")?,
            "--keyring" => keyring = Some(value("--keyring")?),
            "-h" | "--help" => return Err(Failure(format!("{USAGE}\n\n{HELP}"), 0)),
            _ => words.push(arg),
        }
    }
    let command = match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["agent", "status"] => Command::Status,
        ["agent", "unlock"] => Command::Unlock,
        ["agent", "lock"] => Command::Lock,
        ["agent", "lockall"] => Command::LockAll,
        ["vaults", "list"] => Command::VaultsList,
        _ => return Err(usage(&format!("unknown command {:?}", words.join(" ")))),
    };
    let node_path =
        node_path.ok_or_else(|| usage("no node path: pass --node-path or set PK_NODE_PATH"))?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| usage(&format!("bad client host {host:?}")))?;
    let port = port.as_deref().unwrap_or("");
    let port: u16 = port
        .parse()
        .map_err(|_| usage(&format!("bad client port {port:?}")))?;
    let keyring = match (store.as_str(), keyring) {
        ("file", _) => None,
        ("keyring", None) => Some(KeyringBackend::native()),
        ("keyring", Some(name)) => Some(KeyringBackend::from_name(&name).ok_or_else(|| {
            usage(&format!(
                "bad keyring {name:?}: keychain, credential-manager, secret-service or keyutils"
            ))
        })?),
        (other, _) => return Err(usage(&format!("bad store {other:?}: file or keyring"))),
    };
    Ok(Options {
        keyring,
        cert: cert.unwrap_or_else(|| node_path.join("root-cert.pem")),
        node_path,
        address: SocketAddr::new(ip, port),
        command,
    })
}
