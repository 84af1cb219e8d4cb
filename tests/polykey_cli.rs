//! `examples/polykey.rs` against a real Polykey agent, as real processes: each run is a new
//! process that finds its session in `<node path>/token`, as a user's shell commands would.
// Unix only: a real Polykey agent, run with node on the Linux side (none under Wine) (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::process::{Command, Output, Stdio};
use tower_agent_session::store::TokenStore as _;

use tower_agent_session::TokenFile;

mod cli_support;
mod polykey_support;
use cli_support::example;
use polykey_support::agent::{PASSWORD, PolykeyAgent};

const EX_USAGE: i32 = 64;
const EX_DATAERR: i32 = 65;
const EX_UNAVAILABLE: i32 = 69;
const EX_NOPERM: i32 = 77;

/// Runs `polykey ARGS` against `agent`, with no stdin (unattended) and only `env` of the
/// `PK_*` variables.
fn polykey(agent: &PolykeyAgent, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(example("polykey"))
        .args(args)
        .env("PK_NODE_PATH", &agent.node_path)
        .env("PK_CLIENT_PORT", agent.address.port().to_string())
        .env_remove("PK_PASSWORD")
        .env_remove("PK_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the polykey example")
}

#[track_caller]
fn expect(output: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

fn session_file(agent: &PolykeyAgent) -> TokenFile {
    TokenFile::new(agent.node_path.join("token"))
}

#[test]
fn processes_share_the_session_as_polykeys_own_client_does() {
    let agent = PolykeyAgent::start();

    // No token, unattended: the contract's 77, and what to do.
    let output = polykey(&agent, &["agent", "status"], &[]);
    expect(&output, EX_NOPERM);
    assert!(String::from_utf8_lossy(&output.stderr).contains("agent unlock"));

    // Unlock with the password; every later process uses the session file.
    let output = polykey(&agent, &["agent", "unlock"], &[("PK_PASSWORD", PASSWORD)]);
    assert_eq!(expect(&output, 0), "unlocked\n");
    assert!(
        session_file(&agent).load().unwrap().token.is_some(),
        "a session file"
    );
    let status = expect(&polykey(&agent, &["agent", "status"], &[]), 0);
    assert!(status.contains(&agent.node_id), "{status}");
    expect(&polykey(&agent, &["vaults", "list"], &[]), 0);
    let after = session_file(&agent)
        .load()
        .map(|stored| stored.token)
        .unwrap()
        .expect("a session file");
    // What the refreshes left in the file is a token the agent takes, sent by hand.
    expect(
        &polykey(
            &agent,
            &["agent", "status"],
            &[("PK_TOKEN", after.expose())],
        ),
        0,
    );

    // Lock all: the file goes, and a token kept from before is refused as invalid.
    assert_eq!(
        expect(&polykey(&agent, &["agent", "lockall"], &[]), 0),
        "all sessions locked\n"
    );
    assert_eq!(session_file(&agent).load().unwrap().token, None);
    session_file(&agent).store(&after).unwrap();
    expect(&polykey(&agent, &["agent", "status"], &[]), EX_DATAERR);

    // The password with any command starts a new session over it.
    expect(
        &polykey(&agent, &["agent", "status"], &[("PK_PASSWORD", PASSWORD)]),
        0,
    );
    expect(&polykey(&agent, &["agent", "status"], &[]), 0);

    // PK_TOKEN is sent instead of the file's token.
    let token = session_file(&agent).load().unwrap().token.unwrap();
    expect(&polykey(&agent, &["agent", "lock"], &[]), 0);
    assert!(!agent.node_path.join("token").exists());
    expect(
        &polykey(
            &agent,
            &["agent", "status"],
            &[("PK_TOKEN", token.expose())],
        ),
        0,
    );
}

#[test]
fn bad_usage_is_exit_code_64() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(example("polykey"))
            .args(args)
            .env_remove("PK_NODE_PATH")
            .env_remove("PK_CLIENT_PORT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let node_path = dir.path().to_str().unwrap();
    expect(&run(&["--node-path", node_path, "agent"]), EX_USAGE);
    expect(&run(&["agent", "status"]), EX_USAGE);
    expect(
        &run(&["--node-path", node_path, "vaults", "list"]),
        EX_USAGE,
    );
}

#[test]
fn an_unreachable_agent_is_exit_code_69() {
    let agent = PolykeyAgent::start();
    // A port held bound but not listening: nothing answers there.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = held.local_addr().unwrap().as_socket().unwrap().port();
    let output = polykey(
        &agent,
        &["--client-port", &port.to_string(), "agent", "status"],
        &[("PK_PASSWORD", PASSWORD)],
    );
    expect(&output, EX_UNAVAILABLE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the agent"), "{stderr}");
}
