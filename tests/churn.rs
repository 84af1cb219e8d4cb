//! Under churn, as users run it: a long-lived client (this test process) with re-authentication
//! on and 32 tasks calling the example agent (its own process) in a loop, `Echo` (a message body,
//! its reply checked) and `AgentStatus` in turn, while other processes (`client lockall`,
//! `client lock`, `client unlock`) end and renew the shared session.
//!
//! No call may fail: every lock all and every lock is recovered, by one re-authentication at
//! most, and the h2 connection survives (a refused call's message frame that h2 never gave back
//! ended it once, after ~150 recoveries: `tests/h2_small_frames.rs`). Every call that fails is
//! counted by why. The churn is paced by the calls' progress (so many successful calls between
//! two changes), not by sleeps; `CHURN_ROUNDS` sets how many changes (default 12), or
//! `CHURN_SECS` how long to go on making them (a measuring run, with `CHURN_PACE_MS` to space
//! them as a person would), and the summary line says what happened (`--nocapture`).
//! `CHURN_LOG=1` prints the session's debug log, each failed call among it; `CHURN_AGENT_LOG=PATH`
//! keeps the agent's log there (what it logs: `AGENT_RUST_LOG`).
//!
//! The second test stops a lock holder (SIGSTOP) and then locks all: the recovering calls must
//! not wait for it longer than the re-authenticator took plus the refresh bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage};
use tower_agent_session::{BoxError, Error, Session, SessionLayer, Token};

mod cli_support;
mod common;
mod reliability_common;

use cli_support::Fixture;
use common::{PASSWORD, channel, unlock};
// Unix only: the hold-lock child, which the last test stops with SIGSTOP.
#[cfg(unix)]
use reliability_common::{ChildProcess, child_role, hear, param, say, take_lock};

const TASKS: usize = 32;
/// Successful calls between two changes: each change lands on calls in flight.
const CALLS_BETWEEN: u64 = 150;
/// Only a bound on a hang: a passing run never comes near it.
const STALL: Duration = Duration::from_secs(60);
// Unix only: the hold-lock child, which the last test stops with SIGSTOP.
#[cfg(unix)]
const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";

// Unix only: the hold-lock child, which the last test stops with SIGSTOP.
#[cfg(unix)]
#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    assert_eq!(role, "hold-lock");
    let file = take_lock(&std::path::PathBuf::from(param("LOCK")));
    say("locked");
    while hear().is_some() {}
    drop(file);
}

/// What the calls of the long-lived client got.
struct Tally {
    ok: AtomicU64,
    /// Successful `Echo` calls, among `ok`.
    echoes: AtomicU64,
    /// Successful calls of each task.
    by_task: Vec<AtomicU64>,
    failures: Mutex<BTreeMap<String, u64>>,
    started: Instant,
    /// When the first call failed, since `started`.
    first_failure: Mutex<Option<Duration>>,
}

impl Tally {
    fn failed(&self, why: String) {
        self.first_failure
            .lock()
            .unwrap()
            .get_or_insert_with(|| self.started.elapsed());
        *self.failures.lock().unwrap().entry(why).or_default() += 1;
    }

    fn failed_status(&self, status: &tonic::Status) {
        tracing::error!(?status, "CALL FAILED");
        self.failed(match Error::from_status(status) {
            Some(Error::TokenNotProvided) => "session failure: TokenNotProvided".to_owned(),
            Some(Error::TokenInvalid) => "session failure: TokenInvalid".to_owned(),
            Some(other) => format!("crate error: {other}"),
            None => format!("{:?}: {}", status.code(), status.message()),
        });
    }

    fn new() -> Self {
        Self {
            ok: AtomicU64::new(0),
            echoes: AtomicU64::new(0),
            by_task: (0..TASKS).map(|_| AtomicU64::new(0)).collect(),
            failures: Mutex::default(),
            started: Instant::now(),
            first_failure: Mutex::default(),
        }
    }

    fn succeeded(&self, task: usize) {
        self.ok.fetch_add(1, Ordering::SeqCst);
        self.by_task[task].fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until `n` more calls succeeded, and every task twice more: each call in flight at
    /// the last change is over (recovered), and the next change lands on calls that are not
    /// still recovering from this one, as with changes a person makes a second apart.
    fn wait_for_calls(&self, n: u64, what: &str) {
        let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let start = load(&self.ok);
        let tasks: Vec<u64> = self.by_task.iter().map(load).collect();
        let bound = Instant::now() + STALL;
        while load(&self.ok) < start + n
            || self
                .by_task
                .iter()
                .zip(&tasks)
                .any(|(now, then)| load(now) < then + 2)
        {
            assert!(Instant::now() < bound, "calls stalled {what}");
            std::thread::yield_now();
        }
    }
}

/// RSS (kB), open fds and threads of this process, for the summary line.
// Linux only: read in /proc/self; elsewhere the summary says they were not counted.
#[cfg(target_os = "linux")]
fn resources() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    format!("{:?}", (field("VmRSS:"), fds, field("Threads:") as usize))
}

/// What [`resources`] says where there is no `/proc/self` to read them in.
#[cfg(not(target_os = "linux"))]
fn resources() -> String {
    "(not counted: no /proc)".to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The long-lived client: a session on the fixture's file, re-authenticating with the password
/// over a channel without the layer, counted.
async fn long_lived_client(
    fixture: &Fixture,
    reauths: Arc<AtomicU64>,
) -> (
    Session,
    AgentServiceClient<tower_agent_session::layer::ReauthService<tonic::transport::Channel>>,
) {
    let address = fixture.agent().address;
    let session = Session::new(reliability_common::session_store(&fixture.session_dir()));
    session.start().await.unwrap();
    let password_channel = channel(address).await;
    let reauthenticate = move || {
        reauths.fetch_add(1, Ordering::SeqCst);
        let channel = password_channel.clone();
        async move { Ok::<Token, BoxError>(unlock(channel, PASSWORD).await?) }
    };
    let client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate))
            .service(channel(address).await),
    );
    (session, client)
}

#[test]
fn no_call_fails_while_other_processes_lock_all_lock_and_unlock() {
    churn();
}

fn churn() {
    if std::env::var_os("CHURN_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("tower_agent_session=debug,churn=error")
            .with_writer(std::io::stderr)
            .try_init();
    }
    let fixture = Fixture::new();
    fixture.unlock();
    let rounds: usize = std::env::var("CHURN_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    let duration = std::env::var("CHURN_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(Duration::from_secs);
    let runtime = runtime();
    let reauths = Arc::new(AtomicU64::new(0));
    let (session, client) = runtime.block_on(long_lived_client(&fixture, reauths.clone()));
    let tally = Arc::new(Tally::new());
    let stop = Arc::new(AtomicBool::new(false));
    let before = resources();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (mut client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            runtime.spawn(async move {
                let mut turn = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    turn += 1;
                    if turn.is_multiple_of(2) {
                        match client.agent_status(EmptyMessage {}).await {
                            Ok(_) => tally.succeeded(task),
                            Err(status) => tally.failed_status(&status),
                        }
                        continue;
                    }
                    let challenge = format!("task {task}, call {turn}");
                    let sent = EchoMessage {
                        challenge: challenge.clone(),
                    };
                    match client.echo(sent).await {
                        Ok(reply) if reply.get_ref().challenge == challenge => {
                            tally.echoes.fetch_add(1, Ordering::SeqCst);
                            tally.succeeded(task)
                        }
                        Ok(_) => tally.failed("Echo: another reply".to_owned()),
                        Err(status) => tally.failed_status(&status),
                    }
                }
            })
        })
        .collect();

    // For a long measuring run, changes at most this often, as a person (or a cron job) makes
    // them; the CI run paces them by the calls' progress alone.
    let pace = std::env::var("CHURN_PACE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    let password_file = fixture.password_file();
    let password_file = password_file.to_str().unwrap();
    let mut changes: BTreeMap<&str, u64> = BTreeMap::new();
    for round in 0.. {
        let done = match duration {
            Some(duration) => started.elapsed() >= duration,
            None => round >= rounds,
        };
        if done {
            break;
        }
        tally.wait_for_calls(CALLS_BETWEEN, "before a change");
        if let Some(pace) = pace {
            std::thread::sleep(pace);
        }
        let command = ["lockall", "unlock", "lock", "lockall", "lock", "unlock"][round % 6];
        fixture
            .client(&["--password-file", password_file, command])
            .expect_code(0);
        *changes.entry(command).or_default() += 1;
    }
    tally.wait_for_calls(CALLS_BETWEEN, "after the last change");
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        runtime.block_on(task).unwrap();
    }
    let elapsed = started.elapsed();
    let after = resources();
    let failures = tally.failures.lock().unwrap().clone();
    let stats = session.stats();
    eprintln!(
        "churn: {elapsed:.1?}, {} calls succeeded ({} Echo), failures {failures:?} (first at \
         {:.1?}), changes {changes:?}, {} re-authentications ({} shared), RSS/fds/threads \
         {before} -> {after}",
        tally.ok.load(Ordering::SeqCst),
        tally.echoes.load(Ordering::SeqCst),
        tally.first_failure.lock().unwrap(),
        reauths.load(Ordering::SeqCst),
        stats.shared_recoveries,
    );
    if let Some(copy) = std::env::var_os("CHURN_AGENT_LOG") {
        std::fs::copy(&fixture.agent().log, copy).unwrap();
    }
    assert!(failures.is_empty(), "calls failed: {failures:?}");
    let ends =
        changes.get("lockall").copied().unwrap_or(0) + changes.get("lock").copied().unwrap_or(0);
    let runs = reauths.load(Ordering::SeqCst);
    assert!(
        runs <= ends,
        "{runs} re-authentications for {ends} lock alls and locks"
    );
    assert_eq!(stats.reauthentications, runs);
    #[cfg(all(target_os = "linux", feature = "keyring"))]
    if let (Some(_), Some(token)) = (
        reliability_common::keyring_support::backend(),
        session.token(),
    ) {
        let dir = fixture.session_dir();
        reliability_common::keyring_support::assert_no_secret_on_disk(&dir, token.expose());
        reliability_common::keyring_support::assert_no_jwt_on_disk(&dir);
    }
}

/// A `client unlock` stopped (Ctrl-Z) while it holds the session file's lock, then another
/// process's lock all: the 32 calls recover without waiting for the stopped holder more than
/// the refresh bound (the recovered token's write waits for it, behind them).
// Unix only: stops the lock holder with SIGSTOP (`kill -STOP`) (the README's "Platforms" lists every such test).
#[cfg(unix)]
#[test]
fn a_stopped_lock_holder_does_not_hold_the_recovering_calls() {
    let fixture = Fixture::new();
    fixture.unlock();
    let runtime = runtime();
    let reauths = Arc::new(AtomicU64::new(0));
    let (session, client) = runtime.block_on(long_lived_client(&fixture, reauths.clone()));
    runtime
        .block_on(client.clone().agent_status(EmptyMessage {}))
        .unwrap();

    let lock = tower_agent_session::TokenFile::in_dir(fixture.session_dir())
        .lock_path()
        .to_owned();
    let mut holder = ChildProcess::spawn(
        CHILD_ENTRY,
        "hold-lock",
        &[("LOCK", lock.display().to_string())],
    );
    holder.expect("locked");
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &holder.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());

    // The lock all, through the agent: every session's token ends (the file stays, since its
    // lock is held).
    let address = fixture.agent().address;
    runtime.block_on(async {
        let token = session.token().unwrap();
        let mut request = tonic::Request::new(EmptyMessage {});
        let value = format!("Bearer {}", token.expose()).parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        AgentServiceClient::new(channel(address).await)
            .sessions_lock_all(request)
            .await
            .unwrap();
    });
    let latencies: Vec<Duration> = runtime.block_on(async {
        let calls: Vec<_> = (0..TASKS)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    client.agent_status(EmptyMessage {}).await.unwrap();
                    started.elapsed()
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for call in calls {
            latencies.push(call.await.unwrap());
        }
        latencies
    });
    let worst = latencies.iter().max().copied().unwrap();
    eprintln!(
        "stopped holder: worst call {worst:?}, {} re-authentications",
        reauths.load(Ordering::SeqCst)
    );
    assert_eq!(reauths.load(Ordering::SeqCst), 1);
    // Not a speed goal but a hang's bound: the unlock takes milliseconds, and a call that
    // waited for the recovered token's write would wait out the explicit bound (10 s) for the
    // stopped holder. Half of it tells the two apart on however loaded a machine.
    assert!(
        worst < tower_agent_session::TokenFile::DEFAULT_LOCK_WAIT / 2,
        "a call waited {worst:?} for a stopped lock holder"
    );
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &holder.id().to_string()])
        .status();
    drop(holder);
}

/// The churn with the token in a keyring, the CLIs' too (tests/cli_support gives them
/// `--store keyring` inside a keyring variant).
#[cfg(all(target_os = "linux", feature = "keyring"))]
mod keyrings {
    use crate::reliability_common::keyring_support::run_inside;
    use tower_agent_session::KeyringBackend::{KeyUtils, SecretService};

    #[test]
    fn no_call_fails_under_churn_on_a_kernel_keyring() {
        run_inside(
            KeyUtils,
            "keyrings::no_call_fails_under_churn_on_a_kernel_keyring",
            super::churn,
        );
    }

    #[test]
    fn no_call_fails_under_churn_on_a_secret_service() {
        run_inside(
            SecretService,
            "keyrings::no_call_fails_under_churn_on_a_secret_service",
            super::churn,
        );
    }
}
