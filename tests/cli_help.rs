//! What the example CLI tells its user, as real processes: its help, its version, its usage
//! errors, and failures that say why (each cause) and what to do next.
//!
//! `cargo test --test cli_help` alone does not build the example binaries: run
//! `cargo build --examples` first (plain `cargo test` does).
// Unix only: runs the CLI as another user (uid, chown) and checks Unix modes (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tower_agent_session::{CorruptReason, Error};

mod cli_support;
use cli_support::{
    EX_DATAERR, EX_NOPERM, EX_USAGE, Fixture, Run, bare_client_command, example, run, run_client,
};

/// sysexits: I/O error, the code of a session file that cannot be read.
const EX_IOERR: i32 = 74;

/// The agent address of runs that fail before they would connect to an agent.
const NO_AGENT: &str = "127.0.0.1:9";

/// `client ARGS` with none of the test's session environment, nor an agent.
fn bare(args: &[&str]) -> Run {
    run(bare_client_command(args, &[]), args, None)
}

/// The codes listed under `Exit codes:` in a help text.
fn listed_exit_codes(help: &str) -> BTreeSet<i32> {
    help.lines()
        .skip_while(|line| !line.starts_with("Exit codes:"))
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Every exit code the library's errors map to, from one error of each kind.
fn library_exit_codes() -> BTreeSet<i32> {
    let path = PathBuf::from("/session/token");
    let io = |kind: io::ErrorKind| Arc::new(io::Error::from(kind));
    let malformed = tower_agent_session::Token::new("").expect_err("an empty token is malformed");
    let errors = [
        Error::TokenNotProvided,
        Error::TokenInvalid,
        Error::MalformedToken(malformed),
        Error::ReadFile {
            path: path.clone(),
            source: io(io::ErrorKind::PermissionDenied),
        },
        Error::ReadFile {
            path: path.clone(),
            source: io(io::ErrorKind::Other),
        },
        Error::WriteFile {
            path: path.clone(),
            source: io(io::ErrorKind::PermissionDenied),
        },
        Error::WriteFile {
            path: path.clone(),
            source: io(io::ErrorKind::NotFound),
        },
        Error::WriteFile {
            path: path.clone(),
            source: io(io::ErrorKind::Other),
        },
        Error::Store(io(io::ErrorKind::Other)),
        Error::Reauthentication(io(io::ErrorKind::Other)),
        Error::Locked {
            path: path.clone(),
            waited: Duration::from_secs(1),
        },
        Error::CorruptFile {
            path,
            reason: CorruptReason::NotUtf8,
        },
    ];
    errors.iter().map(Error::exit_code).collect()
}

#[test]
fn help_lists_the_commands_flags_environment_and_exit_codes() {
    for flag in ["--help", "-h"] {
        let run = bare(&[flag]);
        run.expect_code(0);
        assert!(run.stderr().is_empty(), "help went to stderr\n{run}");
        for command in ["unlock", "lock", "lockall", "status", "echo"] {
            run.expect_stdout(&format!("\n  {command} "));
        }
        for option in ["--agent", "--session-dir", "--password-file", "--lock-wait"] {
            run.expect_stdout(option);
        }
        for variable in [
            "AGENT_PASSWORD",
            "AGENT_TOKEN",
            "AGENT_ADDR",
            "AGENT_SESSION_DIR",
        ] {
            run.expect_stdout(&format!("\n  {variable} "));
        }
        run.expect_stdout("\n  77  TokenNotProvided")
            .expect_stdout("\n  65  TokenInvalid");

        let listed = listed_exit_codes(&run.stdout());
        // The client's own codes (sysexits), then whatever the library's errors map to.
        let mut used: BTreeSet<i32> = [0, 64, 66, 69, 70, 74, 77].into();
        used.extend(library_exit_codes());
        let missing: Vec<_> = used.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "exit codes missing from the help: {missing:?}\n{run}"
        );
    }
}

#[test]
fn version_prints_the_crate_version() {
    bare(&["--version"])
        .expect_code(0)
        .expect_stdout_line(&format!("client {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn usage_errors_exit_64_with_a_message_on_stderr() {
    let cases: [&[&str]; 5] = [
        &["echo"],
        &[],
        &["frobnicate"],
        &["--lock-wait", "soon", "status"],
        &["status", "extra"],
    ];
    for args in cases {
        let run = bare(args);
        // Each points at the help (a missing command prints it whole).
        run.expect_code(EX_USAGE).expect_stderr("--help");
        assert!(run.stdout().is_empty(), "a usage error on stdout\n{run}");
    }
    bare(&["echo"]).expect_stderr("<TEXT>");
}

#[test]
fn session_failures_without_a_terminal_say_what_to_do() {
    let fixture = Fixture::new();

    // No session.
    fixture
        .client(&["status"])
        .expect_code(EX_NOPERM)
        .expect_stderr(tower_agent_session::Error::TOKEN_NOT_PROVIDED_MESSAGE)
        .expect_stderr("run `client unlock`")
        .expect_stderr("AGENT_PASSWORD");

    // A session every token of which was ended.
    fixture.unlock();
    let dead = fixture.token();
    fixture.client(&["lockall"]).expect_code(0);
    fixture.write_token(&dead);
    fixture
        .client(&["status"])
        .expect_code(EX_DATAERR)
        .expect_stderr(tower_agent_session::Error::TOKEN_INVALID_MESSAGE)
        .expect_stderr("run `client unlock`")
        .expect_stderr("AGENT_PASSWORD");

    // The dead token given in AGENT_TOKEN: that is what must change.
    fixture
        .client_with_env(&["status"], &[("AGENT_TOKEN", &dead)])
        .expect_code(EX_DATAERR)
        .expect_stderr(tower_agent_session::Error::TOKEN_INVALID_MESSAGE)
        .expect_stderr("AGENT_TOKEN holds a token the agent does not take");

    // What the hint says cures it.
    fixture.unlock();
    fixture.client(&["status"]).expect_code(0);
}

#[test]
fn a_session_directory_under_a_regular_file_is_named_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("file");
    fs::write(&file, "").expect("write a regular file");
    let session_dir = file.join("session");
    let token = session_dir.join(tower_agent_session::TokenFile::NAME);
    for args in [&["lock"][..], &["status"]] {
        run_client(NO_AGENT, &session_dir, args, &[], None)
            .expect_code(EX_IOERR)
            .expect_stderr(&format!("the session file {}: ", token.display()))
            .expect_stderr("Not a directory");
    }
}

/// The user every permission applies to.
const NOBODY: u32 = 65534;

/// Whether this process runs as root, whom permission bits do not stop: the owner of a
/// directory it just made.
fn running_as_root(made: &Path) -> bool {
    fs::metadata(made).expect("stat a new directory").uid() == 0
}

/// Whether user `nobody` can run the client binary: it and every directory above it open to
/// others.
fn nobody_can_run_the_client() -> Result<(), String> {
    let client = example("client");
    let mode = |path: &Path| fs::metadata(path).map_or(0, |meta| meta.mode());
    if mode(&client) & 0o005 != 0o005 {
        return Err(format!("{} is not executable by others", client.display()));
    }
    match client
        .ancestors()
        .skip(1)
        .find(|dir| mode(dir) & 0o001 == 0)
    {
        Some(dir) => Err(format!("{} is not searchable by others", dir.display())),
        None => Ok(()),
    }
}

#[test]
fn an_unwritable_session_directory_names_the_session_file_and_the_reason() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let session_dir = base.path().join("session");
    fs::create_dir(&session_dir).expect("create the session directory");
    let token = session_dir.join(tower_agent_session::TokenFile::NAME);
    let mut command = cli_support::client_command(NO_AGENT, &session_dir, &["lock"], &[]);
    if running_as_root(base.path()) {
        // Root writes anywhere: the client runs as `nobody`, whose directory it cannot write.
        if let Err(why) = nobody_can_run_the_client() {
            println!("SKIPPED: running as root, and user nobody cannot run the client: {why}");
            return;
        }
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755))
            .expect("open the base directory to others");
        std::os::unix::fs::chown(&session_dir, Some(NOBODY), Some(NOBODY))
            .expect("give the session directory to nobody");
        command.uid(NOBODY).gid(NOBODY);
    }
    fs::set_permissions(&session_dir, fs::Permissions::from_mode(0o500))
        .expect("make the session directory read-only");

    run(command, &["lock"], None)
        .expect_code(EX_NOPERM)
        .expect_stderr(&format!(
            "cannot write the session file {}: ",
            token.display()
        ))
        .expect_stderr("Permission denied");
}

#[test]
fn the_polykey_example_has_help_too() {
    let output = std::process::Command::new(example("polykey"))
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the polykey example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    for text in [
        "agent unlock",
        "--node-path",
        "PK_NODE_PATH",
        "PK_PASSWORD",
        "PK_TOKEN",
        "\n  77  ",
        "\n  65  ",
    ] {
        assert!(stdout.contains(text), "{text:?} missing from\n{stdout}");
    }
}
