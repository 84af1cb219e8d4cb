//! The example CLI's password prompt, driven through a pseudo-terminal as a user at a keyboard
//! would drive it: each `client` is a real process whose controlling terminal is the slave side
//! of a pty, and the test reads what it shows and types on the master side.
//!
//! `cargo test --test cli_prompt` alone does not build the example binaries: run
//! `cargo build --examples` first (plain `cargo test` does).
#![cfg(target_os = "linux")]

use std::process::Stdio;

mod cli_support;
mod polykey_support;
#[path = "cli_prompt/terminal.rs"]
mod terminal;
use cli_support::{EX_DATAERR, EX_NOPERM, EX_USAGE, Fixture, PASSWORD, run_client};
use terminal::{GAVE_WAY, Stdin, TerminalRun};

/// A token the agent no longer takes, in the fixture's session file: unlocked there, then every
/// session locked by another client with its own session directory.
fn stale_session(fixture: &Fixture) -> String {
    fixture.unlock();
    let stale = fixture.token();
    let other = fixture.session_dir().with_file_name("other-session");
    let agent = fixture.agent().address.to_string();
    let password_file = fixture.password_file();
    let password_file = password_file.to_str().expect("a UTF-8 temporary path");
    let log = Some(fixture.agent().log.as_path());
    run_client(
        &agent,
        &other,
        &["--password-file", password_file, "unlock"],
        &[],
        log,
    )
    .expect_code(0);
    run_client(&agent, &other, &["lockall"], &[], log).expect_code(0);
    assert_eq!(
        fixture.token(),
        stale,
        "the other client touched this session"
    );
    stale
}

/// The session file's token, which the agent must take: a status run on it succeeds without a
/// prompt.
#[track_caller]
fn expect_live_session(fixture: &Fixture) -> String {
    let token = fixture.token();
    TerminalRun::start(fixture, &["status"], &[], Stdin::Null)
        .finish_without_prompt()
        .expect_code(0)
        .expect_shown("LIVE");
    token
}

#[test]
fn after_lock_status_prompts_once_and_succeeds() {
    let fixture = Fixture::new();
    fixture.unlock();
    let before = fixture.token();
    fixture.client(&["lock"]).expect_code(0);

    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(1)
        .expect_shown("LIVE")
        .expect_not_shown(PASSWORD);

    let after = expect_live_session(&fixture);
    assert_ne!(after, before, "the session file holds the locked token");
}

#[test]
fn a_wrong_then_right_password_prompts_twice_and_succeeds() {
    let fixture = Fixture::new();

    let mut run = TerminalRun::start(&fixture, &["echo", "hi", "there"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("not the password");
    run.wait_for_prompt(2);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(2)
        .expect_shown("Incorrect password")
        .expect_shown("hi there")
        .expect_not_shown("not the password")
        .expect_not_shown(PASSWORD);

    expect_live_session(&fixture);
}

#[test]
fn an_invalidated_token_prompts_once_and_the_call_is_replayed() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);

    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(1)
        .expect_shown("LIVE")
        .expect_not_shown(tower_agent_session::Error::TOKEN_INVALID_MESSAGE);

    let renewed = expect_live_session(&fixture);
    assert_ne!(
        renewed, stale,
        "the session file still holds the dead token"
    );
}

/// A prompt already on screen gives way when another process unlocks the same session (an
/// `unlock` in another terminal): it stops reading, puts the terminal back, says why, and the
/// call goes on with that token, no password typed.
#[test]
fn a_prompt_gives_way_to_another_process_unlock() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);

    let run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    fixture.unlock();
    run.wait_for_giving_way();
    run.finish()
        .expect_code(0)
        .expect_prompts(1)
        .expect_shown(GAVE_WAY)
        .expect_shown("LIVE");

    let renewed = expect_live_session(&fixture);
    assert_ne!(
        renewed, stale,
        "the session file still holds the dead token"
    );
}

#[test]
fn end_of_input_at_the_prompt_exits_64() {
    let fixture = Fixture::new();

    // Ctrl-D on an empty line.
    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_bytes(b"\x04");
    run.finish()
        .expect_code(EX_USAGE)
        .expect_prompts(1)
        .expect_shown("\nno password given");
    assert!(!fixture.token_path().exists(), "a session file was made");

    // After a wrong password, too.
    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("not the password");
    run.wait_for_prompt(2);
    run.type_bytes(b"\x04");
    run.finish()
        .expect_code(EX_USAGE)
        .expect_prompts(2)
        .expect_shown("Incorrect password")
        .expect_shown("no password given");

    // An empty line gives up as well: a terminal that hung up reads as one.
    let mut run = TerminalRun::start(&fixture, &["status"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("");
    run.finish()
        .expect_code(EX_USAGE)
        .expect_prompts(1)
        .expect_shown("no password given");
    assert!(!fixture.token_path().exists(), "a session file was made");
}

#[test]
fn unlock_prompts_until_the_password_is_right() {
    let fixture = Fixture::new();

    let mut run = TerminalRun::start(&fixture, &["unlock"], &[], Stdin::Terminal);
    run.wait_for_prompt(1);
    run.type_line("not the password");
    run.wait_for_prompt(2);
    run.type_line(PASSWORD);
    run.finish()
        .expect_code(0)
        .expect_prompts(2)
        .expect_shown("Incorrect password")
        .expect_shown("unlocked");

    expect_live_session(&fixture);
}

#[test]
fn without_a_terminal_on_stdin_session_failures_exit_without_a_prompt() {
    let fixture = Fixture::new();
    let unattended = |args: &[&str], env: &[(&str, &str)]| {
        TerminalRun::start(&fixture, args, env, Stdin::Null).finish_without_prompt()
    };

    // No session.
    unattended(&["status"], &[])
        .expect_code(EX_NOPERM)
        .expect_shown(tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE);
    unattended(&["unlock"], &[])
        .expect_code(EX_USAGE)
        .expect_shown("no password given");

    // A wrong password given: refused, and no session made.
    unattended(&["status"], &[("AGENT_PASSWORD", "not the password")])
        .expect_code(EX_NOPERM)
        .expect_shown("Incorrect password");
    assert!(!fixture.token_path().exists(), "a session file was made");

    // A dead token on file.
    let stale = stale_session(&fixture);
    unattended(&["status"], &[])
        .expect_code(EX_DATAERR)
        .expect_shown(tower_agent_session::Error::TOKEN_INVALID_MESSAGE);
    assert_eq!(fixture.token(), stale, "the session file changed");
}

#[test]
fn explicit_credentials_never_prompt_even_on_a_terminal() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);
    let interactive = |args: &[&str], env: &[(&str, &str)]| {
        TerminalRun::start(&fixture, args, env, Stdin::Terminal).finish_without_prompt()
    };

    interactive(&["status"], &[("AGENT_PASSWORD", "not the password")])
        .expect_code(EX_NOPERM)
        .expect_shown("Incorrect password");
    interactive(&["status"], &[("AGENT_TOKEN", &stale)])
        .expect_code(EX_DATAERR)
        .expect_shown(tower_agent_session::Error::TOKEN_INVALID_MESSAGE);
    assert_eq!(fixture.token(), stale, "the session file changed");
}

#[test]
fn an_explicit_password_unlocks_before_the_command() {
    let fixture = Fixture::new();
    let stale = stale_session(&fixture);
    let password_file = fixture.password_file();
    let password_file = password_file.to_str().expect("a UTF-8 temporary path");

    // Unattended, the dead token on file would fail the call (65): the password unlocks first.
    TerminalRun::start(
        &fixture,
        &["--password-file", password_file, "status"],
        &[],
        Stdin::Null,
    )
    .finish_without_prompt()
    .expect_code(0)
    .expect_shown("LIVE");
    let from_file = expect_live_session(&fixture);
    assert_ne!(from_file, stale, "the password file did not unlock");

    fixture.write_token(&stale);
    TerminalRun::start(
        &fixture,
        &["status"],
        &[("AGENT_PASSWORD", PASSWORD)],
        Stdin::Null,
    )
    .finish_without_prompt()
    .expect_code(0)
    .expect_shown("LIVE");
    let from_env = expect_live_session(&fixture);
    assert_ne!(from_env, stale, "AGENT_PASSWORD did not unlock");
}

/// `examples/polykey.rs` against a real Polykey agent: after a lock all, a command asks for
/// the password until the agent takes it, and its call is replayed.
mod polykey {
    use super::*;

    use crate::polykey_support::agent::PolykeyAgent;

    fn polykey(agent: &PolykeyAgent, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(cli_support::example("polykey"));
        command
            .args(args)
            .env("PK_NODE_PATH", &agent.node_path)
            .env("PK_CLIENT_PORT", agent.address.port().to_string())
            .env_remove("PK_PASSWORD")
            .env_remove("PK_TOKEN");
        command
    }

    #[test]
    fn after_lock_all_status_prompts_until_the_password_is_right() {
        let agent = PolykeyAgent::start();
        let mut unlock = polykey(&agent, &["agent", "unlock"]);
        let unlocked = unlock
            .env("PK_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(unlocked.status.success(), "{unlocked:?}");
        let token = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        let locked = polykey(&agent, &["agent", "lockall"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(locked.status.success(), "{locked:?}");
        // The token from before the lock all, as another terminal would still have it.
        std::fs::write(agent.node_path.join("token"), &token).unwrap();

        let args = ["agent", "status"];
        let no_log = agent.node_path.join("no-log");
        let mut run = TerminalRun::spawn(polykey(&agent, &args), &args, Stdin::Terminal, no_log);
        run.wait_for_prompt(1);
        run.type_line("not the password");
        run.wait_for_prompt(2);
        run.type_line(PASSWORD);
        run.finish()
            .expect_code(0)
            .expect_prompts(2)
            .expect_shown("the agent refused the password")
            .expect_shown(&agent.node_id)
            .expect_not_shown("not the password")
            .expect_not_shown(PASSWORD);
        let after = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        assert_ne!(after, token, "the new session is in the file");
    }

    /// The prompt on screen gives way to `polykey agent unlock` run in another terminal: the
    /// call goes on with that process's token.
    #[test]
    fn a_prompt_gives_way_to_another_process_unlock() {
        let agent = PolykeyAgent::start();
        let unlock = || {
            let unlocked = polykey(&agent, &["agent", "unlock"])
                .env("PK_PASSWORD", PASSWORD)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(unlocked.status.success(), "{unlocked:?}");
        };
        unlock();
        let stale = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        let locked = polykey(&agent, &["agent", "lockall"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(locked.status.success(), "{locked:?}");
        std::fs::write(agent.node_path.join("token"), &stale).unwrap();

        let args = ["agent", "status"];
        let no_log = agent.node_path.join("no-log");
        let run = TerminalRun::spawn(polykey(&agent, &args), &args, Stdin::Terminal, no_log);
        run.wait_for_prompt(1);
        unlock();
        run.wait_for_giving_way();
        run.finish()
            .expect_code(0)
            .expect_prompts(1)
            .expect_shown(GAVE_WAY)
            .expect_shown(&agent.node_id);
        let after = std::fs::read_to_string(agent.node_path.join("token")).unwrap();
        assert_ne!(after, stale, "the other process's session is in the file");
    }
}
