//! The real transport: unary `Echo` calls over tonic on loopback against the crate's agent, one
//! and 64 calls in flight, in calls per second.
//!
//! - `a_static_header/no_refresh`: a plain channel adding a static `authorization` header
//!   (tower-http `AddAuthorization`), against an agent that verifies the token but mints no
//!   refresh for `Echo` (its `AuthLayer` with `no_refresh_path`). The baseline (a).
//! - `a_static_header/refreshing`: the same client against the agent as it is, which mints a
//!   refresh on every call; the client ignores it. The server does exactly the work it does for
//!   (b) and (c), so (b) against this row is the client side's cost alone.
//! - `b_session/refreshing`: `SessionLayer` with a default session: the refresh of every call is
//!   kept, and written durably (group commit) when its `exp`, which has one-second resolution,
//!   outlives the file's.
//! - `c_naive_rewrite/refreshing`: what a naive client does: on every response with a refreshed
//!   token, lock the session file, truncate it and rewrite it in place with `fsync`, on a
//!   blocking thread, before the call completes.
//!
//! Goals: (b) ≥ 0.90× (a) at 64 in flight and ≥ 0.80× (a) at 1; (b) ahead of (c) in both.
//!
//! The client runs on the bench's thread (a current-thread Tokio runtime), each client on its own
//! connection. Group `transport` runs the agent on a thread of its own, as a separate process
//! would be; group `transport_one_thread` runs it on the client's thread, at one in flight, so
//! that no thread wake-up hides the layer's cost.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use http::{HeaderValue, Request, Response, header};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint, Server};
use tower::{Layer, Service};
use tower_agent_session::proto::{AgentServiceClient, ECHO_PATH, EchoMessage};
use tower_agent_session::{Session, SessionLayer, Token, layer::SessionService};
use tower_agent_session_agent::{Agent, SessionManager};
use tower_http::auth::AddAuthorization;

/// The clients measured; an enum so that every call is one concrete, `Send` future.
#[derive(Clone)]
enum Client {
    Static(AgentServiceClient<AddAuthorization<Channel>>),
    Session(AgentServiceClient<SessionService<Channel>>),
    Naive(AgentServiceClient<NaiveService<Channel>>),
}

impl Client {
    async fn echo(&mut self) {
        let message = EchoMessage {
            challenge: "x".into(),
        };
        let reply = match self {
            Self::Static(client) => client.echo(message).await,
            Self::Session(client) => client.echo(message).await,
            Self::Naive(client) => client.echo(message).await,
        };
        if let Err(status) = reply {
            panic!("echo failed: {status:?}");
        }
    }
}

/// Makes `calls` calls through `client`, `in_flight` at a time; returns how long they took.
async fn drive(client: &Client, calls: u64, in_flight: usize) -> Duration {
    let remaining = Arc::new(AtomicI64::new(i64::try_from(calls).unwrap_or(i64::MAX)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..in_flight {
        let mut client = client.clone();
        let remaining = Arc::clone(&remaining);
        tasks.spawn(async move {
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                client.echo().await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a calling task");
    }
    started.elapsed()
}

/// An agent on loopback; it stops when the sender is dropped.
async fn start_agent(manager: &SessionManager, refresh: bool) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("the bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let agent = Agent::new(manager.clone(), "bench");
    let mut layer = agent.auth_layer();
    if !refresh {
        layer = layer.no_refresh_path(ECHO_PATH);
    }
    tokio::spawn(Server::builder().layer(layer).serve_with_incoming_shutdown(
        agent.into_server(),
        tonic::transport::server::TcpIncoming::from(listener),
        shutdown,
    ));
    (address, stop)
}

async fn connect(address: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("an endpoint")
        .connect()
        .await
        .expect("the agent accepts the connection")
}

fn transport(c: &mut Criterion) {
    measure(c, "transport", &[1, 64], Topology::TwoThreads);
    measure(c, "transport_one_thread", &[1], Topology::OneThread);
}

/// Where the agent runs.
#[derive(Clone, Copy)]
enum Topology {
    /// On a runtime of its own thread, the client on the bench's thread: each side wakes its
    /// own tasks, and a call crosses threads as it crosses processes in real use. On this VM a
    /// thread's wake-up costs tens of microseconds, which a call at one in flight pays twice.
    TwoThreads,
    /// On the bench's thread with the client: no wake-ups, every microsecond of either side's
    /// work shows. The strictest set-up for the layer at one in flight.
    OneThread,
}

fn measure(c: &mut Criterion, name: &str, in_flights: &[usize], topology: Topology) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let agents = match topology {
        Topology::TwoThreads => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a Tokio runtime"),
        ),
        Topology::OneThread => None,
    };
    let agent_runtime = agents.as_ref().unwrap_or(&runtime);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let manager = SessionManager::new().expect("a session manager");
    let token = manager.mint().expect("a token");

    let (quiet, _stop_quiet) = agent_runtime.block_on(start_agent(&manager, false));
    let (refreshing, _stop_refreshing) = agent_runtime.block_on(start_agent(&manager, true));

    let static_client = |address| {
        let channel = runtime.block_on(connect(address));
        Client::Static(AgentServiceClient::new(
            AddAuthorization::bearer(channel, token.expose()).as_sensitive(true),
        ))
    };
    let static_quiet = static_client(quiet);
    let static_refreshing = static_client(refreshing);

    let session = Session::new(tower_agent_session::TokenFile::in_dir(
        dir.path().join("session"),
    ));
    runtime
        .block_on(session.start_with_token(token.clone()))
        .expect("the session starts");
    let with_session = Client::Session(AgentServiceClient::new(
        SessionLayer::new(session.clone()).layer(runtime.block_on(connect(refreshing))),
    ));

    let naive_state = Arc::new(NaiveState::new(dir.path().join("naive"), &token));
    let naive = Client::Naive(AgentServiceClient::new(
        NaiveLayer(Arc::clone(&naive_state)).layer(runtime.block_on(connect(refreshing))),
    ));

    let cases = [
        ("a_static_header/no_refresh", &static_quiet),
        ("a_static_header/refreshing", &static_refreshing),
        ("b_session/refreshing", &with_session),
        ("c_naive_rewrite/refreshing", &naive),
    ];
    let mut group = c.benchmark_group(name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    for &in_flight in in_flights {
        for (case, client) in cases {
            group.bench_with_input(BenchmarkId::new(case, in_flight), client, |b, client| {
                b.iter_custom(|calls| runtime.block_on(drive(client, calls, in_flight)));
            });
        }
    }
    group.finish();

    if paired_wanted() {
        for &in_flight in in_flights {
            paired(&runtime, name, &cases, in_flight);
        }
    }

    runtime
        .block_on(session.flush())
        .expect("the refreshes are written");
    eprintln!("{name}: b_session: {:?}", session.stats());
    eprintln!(
        "{name}: c_naive_rewrite: {} rewrites",
        naive_state.rewrites.load(Ordering::Relaxed)
    );
}

/// Rounds of the paired measurement.
const ROUNDS: usize = 15;

/// Whether to run the paired rounds: only when benchmarking (`cargo bench` passes `--bench`;
/// `cargo test --benches` does not), not when criterion lists or profiles, nor when
/// `AGENT_SESSION_BENCH_PAIRED=0`.
fn paired_wanted() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench")
        && !has("--test")
        && !has("--list")
        && !has("--profile-time")
        && std::env::var("AGENT_SESSION_BENCH_PAIRED").as_deref() != Ok("0")
}

/// The ratios again, measured side by side: `ROUNDS` rounds, each running every case for a
/// moment in turn (the order rotating), and the median over the rounds of each case's rate
/// against the baselines' in the same round. Load from other processes that comes and goes
/// over minutes moves criterion's figures, measured one case after another, by tens of
/// percent; it moves both sides of a paired ratio alike. Written beside criterion's estimates
/// as `<group>/paired-<in_flight>.json`.
fn paired(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    cases: &[(&str, &Client)],
    in_flight: usize,
) {
    let calls = |case: &str| -> u64 {
        let base = if in_flight == 1 { 400 } else { 3000 };
        // The naive client writes on every call: a tenth as many keeps its turn as short.
        if case.starts_with("c_naive") {
            base / 10
        } else {
            base
        }
    };
    let mut rates = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for round in 0..ROUNDS {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let (case, client) = cases[i];
            let took = runtime.block_on(drive(client, calls(case), in_flight));
            rates[i].push(calls(case) as f64 / took.as_secs_f64());
        }
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let index = |case: &str| cases.iter().position(|(c, _)| *c == case).expect("a case");
    let ratio = |top: &str, bottom: &str| {
        let (t, b) = (index(top), index(bottom));
        median((0..ROUNDS).map(|r| rates[t][r] / rates[b][r]).collect())
    };
    let pairs = [
        ("b_session/refreshing", "a_static_header/no_refresh"),
        ("b_session/refreshing", "a_static_header/refreshing"),
        ("b_session/refreshing", "c_naive_rewrite/refreshing"),
        ("a_static_header/refreshing", "a_static_header/no_refresh"),
    ];
    let mut json = format!("{{\"rounds\":{ROUNDS},\"in_flight\":{in_flight},\"rates\":{{");
    for (i, (case, _)) in cases.iter().enumerate() {
        let rate = median(rates[i].clone());
        println!("{name}/paired/{in_flight}: {case}: median {rate:.0} calls/s");
        let comma = if i == 0 { "" } else { "," };
        json.push_str(&format!("{comma}\"{case}\":{rate:.1}"));
    }
    json.push_str("},\"ratios\":{");
    for (i, (top, bottom)) in pairs.iter().enumerate() {
        let r = ratio(top, bottom);
        println!("{name}/paired/{in_flight}: {top} / {bottom}: median ratio {r:.3}");
        let comma = if i == 0 { "" } else { "," };
        json.push_str(&format!("{comma}\"{top} / {bottom}\":{r:.4}"));
    }
    json.push_str("}}\n");
    // Where criterion keeps its estimates.
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| PathBuf::from("target"), PathBuf::from)
                .join("criterion")
        });
    let dir = home.join(name);
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("paired-{in_flight}.json")), json));
    if let Err(e) = written {
        eprintln!("cannot save the paired figures in {}: {e}", dir.display());
    }
}

/// The naive client's session: the token in a mutex and a file rewritten in place.
struct NaiveState {
    path: PathBuf,
    header: Mutex<HeaderValue>,
    rewrites: std::sync::atomic::AtomicU64,
}

impl NaiveState {
    fn new(dir: PathBuf, token: &Token) -> Self {
        std::fs::create_dir_all(&dir).expect("the session directory");
        let state = Self {
            path: dir.join("token"),
            header: Mutex::new(token.header_value()),
            rewrites: Default::default(),
        };
        state.rewrite(token.expose().as_bytes());
        state
    }

    /// Lock the file, truncate it, write the token in place, `fsync`, unlock.
    fn rewrite(&self, token: &[u8]) {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .expect("the session file opens");
        file.lock().expect("the session file locks");
        file.set_len(0).expect("the session file truncates");
        file.write_all(token).expect("the token is written");
        file.sync_all().expect("the session file syncs");
        self.rewrites.fetch_add(1, Ordering::Relaxed);
        // Dropping the file unlocks it.
    }
}

#[derive(Clone)]
struct NaiveLayer(Arc<NaiveState>);

impl<S> Layer<S> for NaiveLayer {
    type Service = NaiveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NaiveService {
            inner,
            state: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
struct NaiveService<S> {
    inner: S,
    state: Arc<NaiveState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for NaiveService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let header = self.state.header.lock().expect("the token lock").clone();
        request.headers_mut().insert(header::AUTHORIZATION, header);
        let future = self.inner.call(request);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let response = future.await?;
            if let Some(value) = response.headers().get(header::AUTHORIZATION).cloned() {
                let token = value
                    .as_bytes()
                    .strip_prefix(b"Bearer ")
                    .map(<[u8]>::to_vec);
                if let Some(token) = token {
                    let writer = Arc::clone(&state);
                    tokio::task::spawn_blocking(move || writer.rewrite(&token))
                        .await
                        .expect("the rewrite");
                    *state.header.lock().expect("the token lock") = value;
                }
            }
            Ok(response)
        })
    }
}

criterion_group!(benches, transport);
criterion_main!(benches);
