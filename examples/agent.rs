//! The agent as a process: serves `agent.v1.AgentService` behind its token checks.
//!
//! ```text
//! agent [--listen ADDR] [--http-listen ADDR] [--password-file FILE] [--token-expiry SECS]
//!       [--key-file PATH]
//!       [--exit-on-stdin-close]
//! ```
//!
//! - `--listen ADDR`: the address to serve on (default `127.0.0.1:0`, a free port). Once bound,
//!   the agent prints one line, `listening on <addr>`, to stdout: read it to learn the port.
//! - `--http-listen ADDR`: also serve the calls over plain HTTP (for hyper, reqwest, curl) on
//!   `ADDR`, announced on a second line, `http listening on <addr>`.
//! - `--password-file FILE`: the password that unlocks sessions (trailing newlines are
//!   ignored); without it, `AGENT_PASSWORD`. Without either the agent refuses to start.
//! - `--token-expiry SECS`: how long a session token lives (default 3600).
//! - `--key-file PATH`: keep the signing key in `PATH` (mode 0600), so that tokens survive a
//!   restart; without it every session ends with the process.
//! - `--exit-on-stdin-close`: also stop when stdin reaches its end, so that an agent spawned by a
//!   test or a supervisor dies with its parent.
//!
//! The agent stops on SIGINT or SIGTERM. `RUST_LOG` sets what it logs to stderr (default
//! `warn`).
//!
//! ```text
//! $ AGENT_PASSWORD=secret cargo run --example agent -- --listen 127.0.0.1:50051
//! listening on 127.0.0.1:50051
//! $ AGENT_PASSWORD=secret cargo run --example client -- unlock
//! ```

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_agent_session_agent::{Agent, KeyError, SessionManager};

const USAGE: &str = "usage: agent [--listen ADDR] [--http-listen ADDR] [--password-file FILE] \
                     [--token-expiry SECS] \
                     [--key-file PATH] [--exit-on-stdin-close]";

/// Where the agent listens unless told otherwise: loopback only, any free port.
const DEFAULT_LISTEN: &str = "127.0.0.1:0";
/// One hour: long enough for a working session, short enough that a leaked token soon dies.
const DEFAULT_TOKEN_EXPIRY_SECS: u64 = 3600;

/// sysexits: the command line was wrong, or no password was given.
const EX_USAGE: u8 = 64;
/// sysexits: the password file could not be read.
const EX_NOINPUT: u8 = 66;
/// sysexits: the address could not be bound.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits: the server failed while serving.
const EX_SOFTWARE: u8 = 70;
/// sysexits: the random source or a signal handler failed.
const EX_OSERR: u8 = 71;
/// sysexits: the key file could not be read or written.
const EX_IOERR: u8 = 74;
/// sysexits: the key file is unusable (wrong size, not a file, open to others).
const EX_CONFIG: u8 = 78;

struct Options {
    listen: String,
    http_listen: Option<String>,
    password_file: Option<PathBuf>,
    token_expiry: Duration,
    key_file: Option<PathBuf>,
    exit_on_stdin_close: bool,
}

/// Why the agent stopped: a message for the user and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }
}

impl From<KeyError> for Failure {
    fn from(error: KeyError) -> Self {
        let code = match &error {
            KeyError::Read { .. } | KeyError::Write { .. } => EX_IOERR,
            KeyError::Random(_) => EX_OSERR,
            _ => EX_CONFIG,
        };
        Self::new(code, chain(&error))
    }
}

fn usage(message: &str) -> Failure {
    Failure::new(EX_USAGE, format!("{message}\n{USAGE}"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("agent: cannot start the async runtime: {e}");
            return ExitCode::from(EX_OSERR);
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("agent: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run() -> Result<(), Failure> {
    let options = parse(std::env::args().skip(1))?;
    let password = password(&options)?;
    let manager = match &options.key_file {
        Some(path) => SessionManager::with_key_file(path)?,
        None => SessionManager::new()?,
    }
    .with_lifetime(options.token_expiry);
    let agent = Agent::new(manager, password);

    let listener = bind(&options.listen).await?;
    let address = local_address(&listener)?;
    let http = match &options.http_listen {
        Some(http_listen) => {
            let listener = bind(http_listen).await?;
            let address = local_address(&listener)?;
            Some((listener, address))
        }
        None => None,
    };
    // Before announcing: a parent may signal as soon as it has read the address.
    let shutdown = shutdown_signal(options.exit_on_stdin_close)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    announce(&format!("listening on {address}"))?;
    let http = match http {
        Some((listener, http_address)) => {
            announce(&format!("http listening on {http_address}"))?;
            Some(tokio::spawn(agent.clone().serve_http(listener, stopping())))
        }
        None => None,
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });

    agent
        .serve(listener, stopping())
        .await
        .map_err(|e| Failure::new(EX_SOFTWARE, format!("serving failed: {}", chain(&e))))?;
    if let Some(http) = http {
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Failure::new(
                    EX_SOFTWARE,
                    format!("serving HTTP failed: {e}"),
                ));
            }
            Err(e) => {
                return Err(Failure::new(
                    EX_SOFTWARE,
                    format!("serving HTTP failed: {e}"),
                ));
            }
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

async fn bind(address: &str) -> Result<TcpListener, Failure> {
    TcpListener::bind(address)
        .await
        .map_err(|e| Failure::new(EX_UNAVAILABLE, format!("cannot listen on {address}: {e}")))
}

fn local_address(listener: &TcpListener) -> Result<SocketAddr, Failure> {
    listener
        .local_addr()
        .map_err(|e| Failure::new(EX_OSERR, format!("cannot read the bound address: {e}")))
}

/// Prints a line a parent process waits for. Flushed here rather than left to stdout's
/// buffering: the parent blocks until the line arrives.
fn announce(line: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new(EX_OSERR, format!("cannot write to stdout: {e}")))
}

/// Completes on SIGINT, SIGTERM, or (when asked) the end of stdin.
///
/// The handlers are installed before this returns, so a signal that arrives once the address is
/// announced is never missed.
fn shutdown_signal(exit_on_stdin_close: bool) -> Result<impl Future<Output = ()> + use<>, Failure> {
    let signal_error = |e: std::io::Error| {
        Failure::new(EX_OSERR, format!("cannot install the signal handlers: {e}"))
    };
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(signal_error)?,
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(signal_error)?,
    );
    // Windows has no SIGTERM: Ctrl-C (and Ctrl-Break) on the console, or the end of stdin.
    #[cfg(windows)]
    let (mut interrupt, mut terminate) = (
        tokio::signal::windows::ctrl_c().map_err(signal_error)?,
        tokio::signal::windows::ctrl_break().map_err(signal_error)?,
    );
    let stdin_closed = exit_on_stdin_close.then(stdin_closed);
    Ok(async move {
        let stdin_closed = async {
            match stdin_closed {
                Some(closed) => {
                    let _ = closed.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM (Ctrl-Break on Windows): stopping"),
            () = stdin_closed => tracing::info!("stdin closed: stopping"),
        }
    })
}

/// Resolves once stdin reaches its end (or fails).
///
/// A plain thread, not `tokio::io::stdin`: a blocking read cannot be cancelled, and tokio's
/// runtime waits for its blocking threads at shutdown, so a signal would not stop the agent
/// until stdin closed too. A plain thread dies with the process.
fn stdin_closed() -> oneshot::Receiver<()> {
    let (closed, receiver) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    receiver
}

/// `--password-file` (trailing newlines removed), else `AGENT_PASSWORD`.
fn password(options: &Options) -> Result<String, Failure> {
    let password = match &options.password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(
                    EX_NOINPUT,
                    format!("cannot read the password file {}: {e}", path.display()),
                )
            })?;
            // Trimmed as the client trims it, so one file serves both.
            text.trim_end_matches(['\n', '\r']).to_owned()
        }
        None => match std::env::var("AGENT_PASSWORD") {
            Ok(password) => password,
            Err(std::env::VarError::NotPresent) => {
                return Err(usage(
                    "no password: give --password-file FILE or set AGENT_PASSWORD",
                ));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(usage("AGENT_PASSWORD is not valid UTF-8"));
            }
        },
    };
    if password.is_empty() {
        // An empty password would unlock a session for anyone who can reach the port.
        return Err(usage("the password is empty"));
    }
    Ok(password)
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, Failure> {
    let mut options = Options {
        listen: DEFAULT_LISTEN.to_owned(),
        http_listen: None,
        password_file: None,
        token_expiry: Duration::from_secs(DEFAULT_TOKEN_EXPIRY_SECS),
        key_file: None,
        exit_on_stdin_close: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--listen" => options.listen = value("--listen")?,
            "--http-listen" => options.http_listen = Some(value("--http-listen")?),
            "--password-file" => options.password_file = Some(value("--password-file")?.into()),
            "--key-file" => options.key_file = Some(value("--key-file")?.into()),
            "--token-expiry" => {
                let text = value("--token-expiry")?;
                let secs = text
                    .parse::<u64>()
                    .ok()
                    .filter(|&secs| secs > 0)
                    .ok_or_else(|| {
                        usage(&format!(
                            "--token-expiry needs a positive number of seconds, not {text:?}"
                        ))
                    })?;
                options.token_expiry = Duration::from_secs(secs);
            }
            "--exit-on-stdin-close" => options.exit_on_stdin_close = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(usage(&format!("unknown argument {other:?}"))),
        }
    }
    Ok(options)
}

/// An error and its sources, one after the other: "cannot write the key file k: Permission
/// denied".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
