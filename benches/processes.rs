//! Many processes: 8 client processes × 200 unary `Echo` calls each, all sharing one session
//! file, against one agent on loopback (the set-up of `tests/reliability_processes.rs`, timed).
//! Wall time from spawning the processes to the last one's exit:
//!
//! - `static_header`: each process sends a static `authorization` header (tower-http
//!   `AddAuthorization`) and ignores the refreshes.
//! - `session`: each process starts a default `Session` from the shared file and calls through
//!   `SessionLayer`: refreshes kept and written behind when their `exp` outlives the file's
//!   (`AgentTokens::LiveUntilExpiry`), the file watched for the others' writes.
//! - `session_revoked`: the same with `AgentTokens::RevokedOnRefresh`: every new refresh
//!   written, each call waiting for its write.
//!
//! The processes are this bench binary itself, started again with `AGENT_SESSION_BENCH_WORKER`
//! set: a bench cannot rely on `cargo bench` having built an example, and a worker that is the
//! bench binary is never stale.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tower_agent_session::store::TokenStore as _;

use criterion::{Criterion, SamplingMode, criterion_group};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tower::Layer;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
use tower_agent_session::{AgentTokens, Session, SessionLayer, TokenFile};
use tower_agent_session_agent::{Agent, SessionManager};
use tower_http::auth::AddAuthorization;

const PROCESSES: usize = 8;
const CALLS_PER_PROCESS: u64 = 200;

/// Set in a worker's environment: what the worker does (`static`, `session`, `revoked`).
const WORKER: &str = "AGENT_SESSION_BENCH_WORKER";
const WORKER_AGENT: &str = "AGENT_SESSION_BENCH_AGENT";
const WORKER_DIR: &str = "AGENT_SESSION_BENCH_SESSION_DIR";
const WORKER_TOKEN: &str = "AGENT_SESSION_BENCH_STATIC_TOKEN";

/// A worker that has not finished by then is stuck: the bench fails rather than hang.
const WORKER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
enum Mode {
    StaticHeader,
    Session,
    SessionRevoked,
}

impl Mode {
    const ALL: [Self; 3] = [Self::StaticHeader, Self::Session, Self::SessionRevoked];

    fn name(self) -> &'static str {
        match self {
            Self::StaticHeader => "static_header",
            Self::Session => "session",
            Self::SessionRevoked => "session_revoked",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }
}

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(WORKER) {
        return worker(&mode);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    ExitCode::SUCCESS
}

/// One worker process: `CALLS_PER_PROCESS` echo calls, each of which must succeed.
fn worker(mode: &str) -> ExitCode {
    let Some(mode) = Mode::from_name(mode) else {
        eprintln!("worker: unknown mode {mode}");
        return ExitCode::FAILURE;
    };
    let env = |name| std::env::var(name).unwrap_or_else(|_| panic!("worker: {name} is not set"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("worker: a Tokio runtime");
    runtime.block_on(async {
        let channel = connect(&env(WORKER_AGENT)).await;
        match mode {
            Mode::StaticHeader => {
                let token = env(WORKER_TOKEN);
                let service = AddAuthorization::bearer(channel, &token).as_sensitive(true);
                calls(AgentServiceClient::new(service)).await;
            }
            Mode::Session | Mode::SessionRevoked => {
                let dir = PathBuf::from(env(WORKER_DIR));
                let session = Session::builder(tower_agent_session::TokenFile::new(
                    dir.join(tower_agent_session::TokenFile::NAME),
                ))
                .agent_tokens(if matches!(mode, Mode::SessionRevoked) {
                    AgentTokens::RevokedOnRefresh
                } else {
                    AgentTokens::LiveUntilExpiry
                })
                .build();
                session.start().await.expect("worker: the session starts");
                assert!(session.token().is_some(), "worker: no token in the file");
                let service = SessionLayer::new(session.clone()).layer(channel);
                calls(AgentServiceClient::new(service)).await;
                session
                    .flush()
                    .await
                    .expect("worker: the refreshes are written");
            }
        }
    });
    ExitCode::SUCCESS
}

async fn calls<T>(mut client: AgentServiceClient<T>)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    for i in 0..CALLS_PER_PROCESS {
        let challenge = i.to_string();
        let reply = client
            .echo(EchoMessage {
                challenge: challenge.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("worker: call {i}: {status:?}"));
        assert_eq!(reply.get_ref().challenge, challenge, "worker: call {i}");
    }
}

async fn connect(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("the agent accepts the connection")
}

/// Runs `PROCESSES` workers at once; returns the wall time from the first spawn to the last
/// exit.
fn run_workers(mode: Mode, agent: &str, dir: &Path, token: &str) -> Duration {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let started = Instant::now();
    let workers: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .env(WORKER, mode.name())
                .env(WORKER_AGENT, agent)
                .env(WORKER_DIR, dir)
                .env(WORKER_TOKEN, token)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a worker process starts")
        })
        .collect();
    for worker in workers {
        let output = wait(worker);
        assert!(
            output.status.success(),
            "a {} worker failed ({}):\n{}",
            mode.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    started.elapsed()
}

/// Waits for `worker`, killing it after [`WORKER_TIMEOUT`].
fn wait(worker: Child) -> std::process::Output {
    let pid = worker.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(worker.wait_with_output());
    });
    match receiver.recv_timeout(WORKER_TIMEOUT) {
        Ok(output) => output.expect("the worker's exit status"),
        Err(_) => {
            // The waiting thread owns the child; end it by its id.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("worker {pid} did not finish within {WORKER_TIMEOUT:?}");
        }
    }
}

fn processes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let manager = SessionManager::new().expect("a session manager");
    let listener = runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let agent = listener
        .local_addr()
        .expect("the bound address")
        .to_string();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(Agent::new(manager.clone(), "bench").serve(listener, async {
        let _ = stopped.await;
    }));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let token = manager.mint().expect("a token");
    TokenFile::in_dir(dir.path())
        .store(&token)
        .expect("the session file is written");

    let mut group = c.benchmark_group("processes");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    for mode in Mode::ALL {
        // Ten runs of each: about a third of a second each, a second with every refresh written.
        let run = match mode {
            Mode::SessionRevoked => Duration::from_millis(1100),
            Mode::StaticHeader | Mode::Session => Duration::from_millis(400),
        };
        group.measurement_time(run * 10);
        group.bench_function(mode.name(), |b| {
            b.iter_custom(|runs| {
                (0..runs)
                    .map(|_| run_workers(mode, &agent, dir.path(), token.expose()))
                    .sum()
            });
        });
    }
    group.finish();

    let file = TokenFile::in_dir(dir.path())
        .load()
        .map(|stored| stored.token)
        .expect("the session file reads")
        .expect("the session file holds a token");
    manager
        .verify(&file)
        .expect("the file ends with a token the agent accepts");
}

criterion_group!(benches, processes);
