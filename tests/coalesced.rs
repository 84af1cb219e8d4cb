//! Re-authentication shared across processes: processes whose calls the agent refuses together
//! (a lock all ended the token of the session file they share) unlock once, whoever runs first;
//! the others wait for its token. A holder killed mid-way hands over at once; a stopped one
//! holds the others at most their bound. Every process here is a real one: the example agent,
//! the example client, and this test binary re-run as a child that makes concurrent calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EmptyMessage};
use tower_agent_session::{BoxError, Session, SessionLayer, Token};

mod cli_support;
mod common;
mod reliability_common;

use cli_support::Fixture;
use common::{PASSWORD, channel, unlock};
use reliability_common::{ChildProcess, child_role, fail, hear, param, say};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";
const CALLS: usize = 16;
/// Only a bound on a hang: a passing run never comes near it.
const HANG: Duration = Duration::from_secs(60);

/// A child: a session on the shared file, `CALLS` concurrent calls once told `go`, and a
/// re-authenticator that unlocks with the password (role `caller`) or, after saying so, never
/// finishes (role `stuck`: a person who does not type the password).
#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    let address = param("AGENT");
    let dir = param("DIR");
    let wait = Duration::from_millis(param("WAIT_MS").parse().unwrap_or_else(|e| fail(e)));
    let runtime = reliability_common::runtime();
    runtime.block_on(async move {
        let session = Session::builder(reliability_common::session_store_waiting(
            std::path::Path::new(&dir),
            wait,
        ))
        .on_reauth_wait(|pid| say(format_args!("waiting {}", pid.unwrap_or(0))))
        .build();
        session.start().await.unwrap_or_else(|e| fail(e));
        let address: std::net::SocketAddr = address.parse().unwrap_or_else(|e| fail(e));
        let password_channel = channel(address).await;
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        let stuck = role == "stuck";
        let reauthenticate = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let channel = password_channel.clone();
            async move {
                if stuck {
                    say("reauthenticating");
                    std::future::pending::<()>().await;
                }
                Ok::<Token, BoxError>(unlock(channel, PASSWORD).await?)
            }
        };
        let client = AgentServiceClient::new(
            ServiceBuilder::new()
                .layer(SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate))
                .service(channel(address).await),
        );
        say("ready");
        if hear().as_deref() != Some("go") {
            fail("no go");
        }
        let started = Instant::now();
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move { client.agent_status(EmptyMessage {}).await })
            })
            .collect();
        let mut ok = 0;
        for call in calls {
            match call.await {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(status)) => say(format_args!("failed {status:?}")),
                Err(e) => fail(e),
            }
        }
        let _ = session.flush().await;
        say(format_args!(
            "done {ok} {} {}",
            runs.load(Ordering::SeqCst),
            started.elapsed().as_millis()
        ));
    });
}

/// A fixture whose session file holds a token the agent ended with a lock all.
fn revoked_fixture() -> Fixture {
    let fixture = Fixture::new();
    fixture.unlock();
    let store = reliability_common::session_store(&fixture.session_dir());
    let old = store.load().unwrap().token.expect("unlocked");
    let password_file = fixture.password_file();
    fixture
        .client(&[
            "--password-file",
            password_file.to_str().unwrap(),
            "lockall",
        ])
        .expect_code(0);
    // Back in the store the processes share: the session file, or a keyring variant's entry.
    store.store(&old).unwrap();
    fixture
}

fn spawn(fixture: &Fixture, role: &str, wait: Duration) -> ChildProcess {
    let params = [
        ("AGENT", fixture.agent().address.to_string()),
        ("DIR", fixture.session_dir().display().to_string()),
        ("WAIT_MS", wait.as_millis().to_string()),
    ];
    let mut child = ChildProcess::spawn(CHILD_ENTRY, role, &params);
    child.expect("ready");
    child
}

/// `done <ok> <runs> <ms>` from a child, past the lines it says before (that it waits).
fn done(child: &mut ChildProcess) -> (usize, u64, u64) {
    let line = loop {
        match child.next_line() {
            Some(line) if line.starts_with("done ") => break line,
            Some(line) if line.starts_with("waiting") => {}
            other => panic!("expected done, got {other:?}"),
        }
    };
    let mut words = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse::<u64>().unwrap());
    let mut next = || words.next().expect("done <ok> <runs> <ms>");
    (next() as usize, next(), next())
}

#[test]
fn eight_processes_failing_together_unlock_once() {
    eight_failing_together();
}

fn eight_failing_together() {
    let fixture = revoked_fixture();
    let mut children: Vec<_> = (0..8).map(|_| spawn(&fixture, "caller", HANG)).collect();
    for child in &mut children {
        child.send("go");
    }
    let mut runs = 0;
    let mut times = Vec::new();
    for child in &mut children {
        let (ok, ran, ms) = done(child);
        assert_eq!(ok, CALLS, "every call succeeds");
        runs += ran;
        times.push(ms);
    }
    times.sort_unstable();
    eprintln!(
        "8 processes x {CALLS} calls: {runs} re-authentication(s); all calls done in {} ms \
         (median) to {} ms (worst)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert_eq!(runs, 1, "one re-authentication for the eight processes");
    #[cfg(all(target_os = "linux", feature = "keyring"))]
    if reliability_common::keyring_support::backend().is_some() {
        let store = reliability_common::session_store(&fixture.session_dir());
        let last = store
            .load()
            .unwrap()
            .token
            .expect("the new session's token");
        let dir = fixture.session_dir();
        reliability_common::keyring_support::assert_no_secret_on_disk(&dir, last.expose());
        reliability_common::keyring_support::assert_no_jwt_on_disk(&dir);
    }
}

#[test]
fn cli_processes_failing_together_unlock_once() {
    for k in [1, 2, 4, 8] {
        let fixture = revoked_fixture();
        let password_file = fixture.password_file();
        let password_file = password_file.to_str().unwrap();
        let runs: Vec<_> = (0..k)
            .map(|_| {
                fixture
                    .client_command(&["--password-file", password_file, "status"], &[])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut unlocks = 0;
        let mut waits = 0;
        for run in runs {
            let output = run.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "client status failed: {stderr}");
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "LIVE");
            unlocks += stderr.matches("unlocking with the password").count();
            waits += stderr.matches("to unlock the session").count();
        }
        eprintln!("{k} client processes: {unlocks} unlock(s), {waits} said they waited");
        assert_eq!(unlocks, 1, "{k} processes unlock once");
    }
}

/// The process re-authenticating is killed (SIGKILL; `TerminateProcess` on Windows) mid-way:
/// the OS releases its lock, and a process waiting for it takes over at once.
#[test]
fn a_killed_holder_hands_over_at_once() {
    let fixture = revoked_fixture();
    let mut holder = spawn(&fixture, "stuck", HANG);
    holder.send("go");
    holder.expect("reauthenticating");
    let mut waiter = spawn(&fixture, "caller", HANG);
    waiter.send("go");
    let said = waiter.expect("waiting");
    assert_eq!(said, holder.id().to_string(), "it names the holder's pid");
    let killed = Instant::now();
    holder.kill();
    let (ok, runs, _) = done(&mut waiter);
    let takeover = killed.elapsed();
    eprintln!("takeover after the kill: {takeover:?} until all {CALLS} calls were done");
    assert_eq!(
        (ok, runs),
        (CALLS, 1),
        "the waiter re-authenticated and every call succeeded"
    );
}

/// The process re-authenticating is stopped (SIGSTOP): its lock stays, and a waiting process
/// re-authenticates itself once its bound has passed.
// Unix only: stops the re-authenticating process with SIGSTOP (`kill -STOP`) (the README's "Platforms" lists every such test).
#[cfg(unix)]
#[test]
fn a_stopped_holder_holds_the_others_at_most_their_bound() {
    const BOUND: Duration = Duration::from_secs(2);
    let fixture = revoked_fixture();
    let mut holder = spawn(&fixture, "stuck", HANG);
    holder.send("go");
    holder.expect("reauthenticating");
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &holder.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let mut waiter = spawn(&fixture, "caller", BOUND);
    let started = Instant::now();
    waiter.send("go");
    waiter.expect("waiting");
    let (ok, runs, _) = done(&mut waiter);
    let waited = started.elapsed();
    eprintln!("with the holder stopped, the waiter's calls were done after {waited:?}");
    assert_eq!((ok, runs), (CALLS, 1));
    assert!(waited >= BOUND, "it waited for the holder first");
    assert!(waited < HANG, "it never waited past its bound for long");
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &holder.id().to_string()])
        .status();
}

#[cfg(all(target_os = "linux", feature = "keyring"))]
mod keyrings {
    use crate::reliability_common::keyring_support::run_inside;
    use tower_agent_session::KeyringBackend::{KeyUtils, SecretService};

    #[test]
    fn eight_processes_on_a_kernel_keyring_unlock_once() {
        run_inside(
            KeyUtils,
            "keyrings::eight_processes_on_a_kernel_keyring_unlock_once",
            super::eight_failing_together,
        );
    }

    #[test]
    fn eight_processes_on_a_secret_service_unlock_once() {
        run_inside(
            SecretService,
            "keyrings::eight_processes_on_a_secret_service_unlock_once",
            super::eight_failing_together,
        );
    }
}
