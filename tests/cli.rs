//! The example CLI against the example agent, as real processes: every `client` run is a new
//! process that finds its session in the session file, as a user's shell commands would.
//!
//! The binaries are the crate's own examples (see `cli_support` for how they are found and
//! how each test's agent runs): `cargo test --test cli` alone does not build them, so run
//! `cargo build --examples` first. The password prompt is tested in `cli_prompt.rs`.
// Unix only: checks the session file's Unix modes (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use tower_agent_session_agent::VerifyError;

mod cli_support;
use cli_support::{
    EX_DATAERR, EX_NOPERM, EX_UNAVAILABLE, EX_USAGE, Fixture, PASSWORD, bare_client_command,
    dependencies, example, read_log, run_client,
};

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn dep_info_is_read_as_cargo_writes_it() {
    assert_eq!(
        dependencies("/t/examples/agent: /w/src/lib.rs /w/my\\ dir/a.rs\n\n"),
        [
            PathBuf::from("/w/src/lib.rs"),
            PathBuf::from("/w/my dir/a.rs")
        ]
    );
    assert!(dependencies("").is_empty());
}

#[test]
fn unlock_acquires_a_session_token() {
    let fixture = Fixture::new();
    fixture.unlock();

    let token = fixture.token();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    assert_eq!(mode(&fixture.token_path()), 0o600, "session file mode");
    assert_eq!(
        mode(&fixture.session_dir()),
        0o700,
        "session directory mode"
    );

    // No password this time: the session file is what lets it in.
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");
}

#[test]
fn serial_commands_refresh_the_token() {
    let fixture = Fixture::new();
    fixture.unlock();
    let unlocked = fixture.token();

    // Each status's refresh is written when it lives longer than the file's token (the agent's
    // tokens live until they expire, so one minted in the same second as the file's buys
    // nothing): the file's expiry never goes back, and a later one is a new token.
    let expiry = |token: &str| {
        tower_agent_session::Token::new(token)
            .unwrap()
            .expires_at()
            .unwrap()
    };
    let mut previous = unlocked;
    for _ in 0..2 {
        fixture.client(&["status"]).expect_code(0);
        let now = fixture.token();
        assert!(
            expiry(&now) >= expiry(&previous),
            "the file's expiry went back"
        );
        if expiry(&now) > expiry(&previous) {
            assert_ne!(now, previous);
        }
        previous = now;
    }

    // The refreshed token is one the agent takes.
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");
}

#[test]
fn lock_deletes_the_session_token() {
    let fixture = Fixture::new();
    fixture.unlock();
    assert!(fixture.token_path().exists());

    fixture
        .client(&["lock"])
        .expect_code(0)
        .expect_stdout_line("locked");
    assert!(
        !fixture.token_path().exists(),
        "lock left the session file in place"
    );

    fixture
        .client(&["status"])
        .expect_code(EX_NOPERM)
        .expect_stderr(tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE);
}

#[test]
fn lockall_invalidates_old_tokens() {
    let fixture = Fixture::new();
    fixture.unlock();
    let saved = fixture.token();

    fixture
        .client(&["lockall"])
        .expect_code(0)
        .expect_stdout_line("all sessions locked");
    assert!(
        !fixture.token_path().exists(),
        "lockall left the session file in place"
    );

    // Sent explicitly, with no session file.
    fixture
        .client_with_env(&["status"], &[("AGENT_TOKEN", &saved)])
        .expect_code(EX_DATAERR)
        .expect_stderr(tower_agent_session::Error::TOKEN_INVALID_MESSAGE);

    // Found in the session file.
    fixture.write_token(&saved);
    fixture
        .client(&["status"])
        .expect_code(EX_DATAERR)
        .expect_stderr(tower_agent_session::Error::TOKEN_INVALID_MESSAGE);

    // What the message asks for cures it, though the dead token is still on file.
    fixture.unlock();
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn an_expired_token_is_rejected() {
    let fixture = Fixture::with_key_file();
    let manager = fixture.manager();

    // First a token this test minted that is still valid: the test shares the agent's key, so
    // the rejection below is for the expiry and not for a foreign signature.
    let valid = manager.mint().expect("mint a token");
    fixture.write_token(valid.expose());
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");

    let expired = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(60 * 60))
        .expect("mint an expired token");
    assert_eq!(manager.verify(&expired), Err(VerifyError::Expired));
    fixture.write_token(expired.expose());
    fixture
        .client(&["status"])
        .expect_code(EX_DATAERR)
        .expect_stderr(tower_agent_session::Error::TOKEN_INVALID_MESSAGE);

    fixture.unlock();
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn a_wrong_password_is_refused_and_leaves_the_session_file_alone() {
    let fixture = Fixture::new();
    let wrong = fixture.write_password_file("wrong-password", "not the password");
    let wrong = wrong.to_str().expect("a UTF-8 temporary path");

    // No session yet: none is made.
    fixture
        .client(&["--password-file", wrong, "unlock"])
        .expect_code(EX_NOPERM)
        .expect_stderr("Incorrect password");
    assert!(
        !fixture.token_path().exists(),
        "a refused unlock wrote a session file"
    );

    // A live session: it stays exactly as it was.
    fixture.unlock();
    let before = fs::read(fixture.token_path()).expect("read the session file");
    fixture
        .client(&["--password-file", wrong, "unlock"])
        .expect_code(EX_NOPERM)
        .expect_stderr("Incorrect password");
    let after = fs::read(fixture.token_path()).expect("read the session file");
    assert_eq!(after, before, "a refused unlock changed the session file");
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn echo_prints_its_text() {
    let fixture = Fixture::new();
    fixture.unlock();
    fixture
        .client(&["echo", "hello", "world"])
        .expect_code(0)
        .expect_stdout_line("hello world");
}

#[test]
fn a_token_survives_an_agent_restart_with_the_same_key_file() {
    let mut fixture = Fixture::with_key_file();
    fixture.unlock();
    let before = fixture.agent().address;

    fixture.restart_agent();
    assert_ne!(
        fixture.agent().address,
        before,
        "the new agent must be a new process"
    );
    fixture
        .client(&["status"])
        .expect_code(0)
        .expect_stdout_line("LIVE");
}

#[test]
fn a_missing_agent_is_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A port held, bound but not listening, for the whole test: connecting to it is refused,
    // and no other test can take it meanwhile.
    let held =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("a free port");
    let address = held
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket())
        .expect("the bound address");
    let run = run_client(&address.to_string(), dir.path(), &["status"], &[], None);
    run.expect_code(EX_UNAVAILABLE)
        .expect_stderr(&format!("cannot reach the agent at {address}: "))
        // The cause under "transport error", once, though errors may repeat their source.
        .expect_stderr("refused");
    assert_eq!(
        run.stderr().to_lowercase().matches("refused").count(),
        1,
        "{run}"
    );
}

#[test]
fn the_agent_needs_a_password() {
    let output = Command::new(example("agent"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("AGENT_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run the agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EX_USAGE), "{stderr}");
    assert!(stderr.contains("no password"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "it announced an address without a password"
    );
}

#[test]
fn the_agent_stops_when_its_stdin_closes() {
    let fixture = Fixture::new();
    let mut agent = fixture.agent.expect("an agent runs");
    drop(agent.process.child().stdin.take());
    let status = agent.process.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}\n{}", read_log(&agent.log));
}

#[test]
fn the_agent_stops_on_sigterm() {
    let fixture = Fixture::new();
    let mut agent = fixture.agent.expect("an agent runs");
    // Held open until the agent has exited: `Child::wait` would close it, and the agent would
    // stop for that reason instead.
    let _stdin = agent.process.child().stdin.take();
    let pid = agent.process.child().id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = agent.process.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status}\n{}", read_log(&agent.log));
}

/// What another program (or a disk fault) may leave in the session file.
const GARBAGE: &str = "garbage here\n";

#[test]
fn a_corrupt_session_file_never_locks_the_user_out() {
    let fixture = Fixture::new();
    fs::create_dir_all(fixture.session_dir()).expect("create the session directory");
    let corrupt = || fs::write(fixture.token_path(), GARBAGE).expect("write the session file");

    // No password and no terminal: the error stays, and says how to get out.
    corrupt();
    fixture
        .client(&["status"])
        .expect_code(EX_DATAERR)
        .expect_stderr("does not hold a valid token")
        .expect_stderr("client unlock");
    assert_eq!(fs::read_to_string(fixture.token_path()).unwrap(), GARBAGE);

    // A password given with the command unlocks over it.
    fixture
        .client_with_env(&["status"], &[("AGENT_PASSWORD", PASSWORD)])
        .expect_code(0)
        .expect_stdout_line("LIVE");
    fixture.client(&["status"]).expect_code(0);

    // `unlock` writes over it.
    corrupt();
    fixture.unlock();
    fixture.client(&["status"]).expect_code(0);

    // `lock` removes it.
    corrupt();
    fixture
        .client(&["lock"])
        .expect_code(0)
        .expect_stdout_line("locked");
    assert!(!fixture.token_path().exists());
}

#[test]
fn the_default_session_directory_is_the_users_runtime_or_config_directory() {
    let fixture = Fixture::new();
    let base = fixture.dir.path();
    let (home, runtime, config) = (base.join("home"), base.join("run"), base.join("config"));
    let explicit = base.join("explicit");
    // Where the user stands: a repository, say. The session file must not land here.
    let cwd = base.join("repository");
    for dir in [&home, &runtime, &config, &cwd] {
        fs::create_dir(dir).expect("create a directory");
    }
    let address = fixture.agent().address.to_string();
    let password_file = fixture.password_file();
    let run = |args: &[&str], env: &[(&str, &Path)]| {
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|&(name, path)| (name, path.to_str().expect("a UTF-8 temporary path")))
            .collect();
        let mut args_with_agent = vec!["--agent", &address];
        args_with_agent.extend_from_slice(args);
        let mut command = bare_client_command(&args_with_agent, &env);
        command.current_dir(&cwd);
        cli_support::run(command, args, Some(&fixture.agent().log))
    };
    let password_file = password_file.to_str().expect("a UTF-8 temporary path");
    let unlock = ["--password-file", password_file, "unlock"];

    let cases = [
        // The runtime directory first.
        (
            vec![
                ("HOME", home.as_path()),
                ("XDG_RUNTIME_DIR", &runtime),
                ("XDG_CONFIG_HOME", &config),
            ],
            runtime.join("agent-session"),
        ),
        // Else the config directory.
        (
            vec![("HOME", home.as_path()), ("XDG_CONFIG_HOME", &config)],
            config.join("agent-session"),
        ),
        // Else its place under the home directory.
        (
            vec![("HOME", home.as_path())],
            home.join(".config").join("agent-session"),
        ),
        // AGENT_SESSION_DIR above them all.
        (
            vec![
                ("HOME", home.as_path()),
                ("XDG_RUNTIME_DIR", &runtime),
                ("AGENT_SESSION_DIR", &explicit),
            ],
            explicit.clone(),
        ),
    ];
    for (env, session_dir) in cases {
        let token = session_dir.join(tower_agent_session::TokenFile::NAME);
        assert!(!token.exists(), "{} exists already", token.display());
        run(&unlock, &env)
            .expect_code(0)
            .expect_stdout_line("unlocked");
        assert!(token.exists(), "no session file at {}", token.display());
        // Later runs find it there.
        run(&["status"], &env)
            .expect_code(0)
            .expect_stdout_line("LIVE");
    }
    let left: Vec<_> = fs::read_dir(&cwd)
        .expect("list the current directory")
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect();
    assert!(
        left.is_empty(),
        "the client wrote into its current directory: {left:?}"
    );
}
