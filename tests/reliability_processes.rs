//! Many processes, one file: eight client processes make refreshing calls through the session
//! layer against one agent, all sharing one session file, while a watcher process reads that
//! file in a tight loop. Every call must succeed, every read must be a whole token the agent
//! accepts, and the file must end with a token the agent accepts.
//!
//! Run with `--nocapture` to see the counts; `RELIABILITY_SCALE=n` multiplies the calls.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tower_agent_session::store::TokenStore as _;

use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
use tower_agent_session::{Session, SessionLayer};
use tower_agent_session_agent::Agent;

mod reliability_common;
use reliability_common::{
    ChildProcess, PASSWORD, child_role, counts, fail, hear, param, runtime, say, scaled, serve,
    shared_manager, small_runtime,
};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";
const CLIENTS: usize = 8;
const CALLS_PER_CLIENT: u64 = 200;

/// The two variants share two cores; one at a time keeps each fast and its counts meaningful.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "client" => client_child(),
        "watcher" => watcher_child(),
        other => fail(format_args!("unknown role {other}")),
    }
}

/// Makes `CALLS` echo calls through the session layer, each of which must succeed.
fn client_child() -> ! {
    let dir = PathBuf::from(param("SESSION_DIR"));
    let calls: u64 = param("CALLS").parse().unwrap();
    let revoked = param("REVOKED") == "1";
    let id = std::process::id();
    let session = Session::builder(reliability_common::session_store(&dir))
        .agent_tokens(if revoked {
            tower_agent_session::AgentTokens::RevokedOnRefresh
        } else {
            tower_agent_session::AgentTokens::LiveUntilExpiry
        })
        .build();
    let rt = small_runtime();
    rt.block_on(async {
        session.start().await.unwrap_or_else(|e| fail(e));
        if session.token().is_none() {
            fail("no token in the session file at start");
        }
        let channel = reliability_common::channel(&param("AGENT")).await;
        let mut client = AgentServiceClient::new(
            ServiceBuilder::new()
                .layer(SessionLayer::new(session.clone()))
                .service(channel),
        );
        say("ready");
        if hear().as_deref() != Some("go") {
            fail("the parent did not say go");
        }
        for i in 0..calls {
            let challenge = format!("{id}-{i}");
            match client
                .echo(EchoMessage {
                    challenge: challenge.clone(),
                })
                .await
            {
                Ok(reply) if reply.get_ref().challenge == challenge => {}
                Ok(_) => fail(format_args!("call {i}: the echo came back changed")),
                Err(status) => fail(format_args!("call {i}: {status:?}")),
            }
        }
        session.flush().await.unwrap_or_else(|e| fail(e));
    });
    let s = session.stats();
    say(format_args!(
        "done calls={calls} refreshes={} writes={} skipped={} lost={} external={}",
        s.refreshes, s.writes, s.skipped_writes, s.lost_refreshes, s.external_changes
    ));
    std::process::exit(0)
}

/// Reads the session file in a tight loop until its stdin closes; every read must be a whole
/// token signed by the agent's key.
fn watcher_child() -> ! {
    let file = reliability_common::session_store(&PathBuf::from(param("SESSION_DIR")));
    let manager = shared_manager(&PathBuf::from(param("KEY_FILE")));
    say("ready");
    if hear().as_deref() != Some("go") {
        fail("the parent did not say go");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    std::thread::spawn(move || {
        while hear().is_some() {}
        stopper.store(true, Ordering::Release);
    });
    let mut reads = 0u64;
    let mut verified = HashSet::new();
    while !stop.load(Ordering::Acquire) {
        match file.load().map(|stored| stored.token) {
            Ok(Some(token)) => {
                if !verified.contains(token.expose()) {
                    if let Err(e) = manager.verify(&token) {
                        fail(format_args!("read {reads}: a token the agent refuses: {e}"));
                    }
                    verified.insert(token.expose().to_owned());
                }
            }
            Ok(None) => fail(format_args!("read {reads}: no token")),
            Err(e) => fail(format_args!("read {reads}: {e}")),
        }
        reads += 1;
    }
    say(format_args!(
        "done reads={reads} distinct={}",
        verified.len()
    ));
    std::process::exit(0)
}

fn many_processes_one_file(revoked: bool) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let calls = scaled(CALLS_PER_CLIENT);
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent").join("key");
    let session_dir = dir.path().join("client");
    let manager = shared_manager(&key_file);
    let rt = runtime();
    let agent = rt.block_on(serve(Agent::new(manager.clone(), PASSWORD)));
    reliability_common::session_store(&session_dir)
        .store(&manager.mint().unwrap())
        .unwrap();

    let common = |name: &'static str, value: String| (name, value);
    let mut watcher = ChildProcess::spawn(
        CHILD_ENTRY,
        "watcher",
        &[
            common("SESSION_DIR", session_dir.display().to_string()),
            common("KEY_FILE", key_file.display().to_string()),
        ],
    );
    let mut clients: Vec<ChildProcess> = (0..CLIENTS)
        .map(|_| {
            ChildProcess::spawn(
                CHILD_ENTRY,
                "client",
                &[
                    common("SESSION_DIR", session_dir.display().to_string()),
                    common("AGENT", agent.address.to_string()),
                    common("CALLS", calls.to_string()),
                    common("REVOKED", u8::from(revoked).to_string()),
                ],
            )
        })
        .collect();
    watcher.expect("ready");
    for client in &mut clients {
        client.expect("ready");
    }
    // Everyone is connected and has read the file: start them together.
    watcher.send("go");
    for client in &mut clients {
        client.send("go");
    }

    let mut total = std::collections::BTreeMap::<String, u64>::new();
    for client in &mut clients {
        let report = client.expect("done");
        client.wait_success();
        for (k, v) in counts(&report) {
            *total.entry(k).or_default() += v;
        }
    }
    watcher.close_stdin();
    let watched = counts(&watcher.expect("done"));
    watcher.wait_success();

    let last = reliability_common::session_store(&session_dir)
        .load()
        .map(|stored| stored.token)
        .unwrap()
        .expect("the file ends with a token");
    manager
        .verify(&last)
        .expect("the agent accepts the file's last token");
    assert_eq!(total["calls"], CLIENTS as u64 * calls);
    // Every call brought a refresh; each process's watch picks up the others' writes, and a
    // refresh answering a call sent before such a change is dropped as stale, not taken.
    assert!(
        total["refreshes"] > 0 && total["refreshes"] <= CLIENTS as u64 * calls,
        "refreshes were taken: {total:?}"
    );
    assert!(watched["reads"] > 0, "the watcher read the file");
    if revoked {
        assert!(total["writes"] > 0, "refreshes were written: {total:?}");
    }
    assert!(
        reliability_common::temp_files(&session_dir).is_empty(),
        "no temp file is left behind"
    );
    #[cfg(all(target_os = "linux", feature = "keyring"))]
    if let Some(backend) = reliability_common::keyring_support::backend() {
        reliability_common::keyring_support::assert_no_secret_on_disk(&session_dir, last.expose());
        reliability_common::keyring_support::assert_no_jwt_on_disk(&session_dir);
        println!("(the {backend}: no file under the session's directory holds the token)");
    }
    println!(
        "many processes, one file (revoked={revoked}): {CLIENTS} processes x {calls} \
         calls = {} calls, all succeeded; refreshes={} writes={} skipped={} lost={} \
         external={}; watcher: {} reads, all whole tokens the agent accepts ({} distinct)",
        total["calls"],
        total["refreshes"],
        total["writes"],
        total["skipped"],
        total["lost"],
        total["external"],
        watched["reads"],
        watched["distinct"],
    );
}

#[test]
fn many_processes_share_one_file_default_writes() {
    many_processes_one_file(false);
}

#[test]
fn many_processes_share_one_file_writing_every_refresh() {
    many_processes_one_file(true);
}

#[cfg(all(target_os = "linux", feature = "keyring"))]
mod keyrings {
    use crate::reliability_common::keyring_support::run_inside;
    use tower_agent_session::KeyringBackend::{KeyUtils, SecretService};

    #[test]
    fn many_processes_share_one_kernel_keyring_entry() {
        let name = "keyrings::many_processes_share_one_kernel_keyring_entry";
        run_inside(KeyUtils, name, || super::many_processes_one_file(true));
    }

    #[test]
    fn many_processes_share_one_secret_service_entry() {
        let name = "keyrings::many_processes_share_one_secret_service_entry";
        run_inside(SecretService, name, || super::many_processes_one_file(true));
    }
}
