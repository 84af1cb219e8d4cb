//! What the example CLI tells its user, as real processes: its help, its version and its usage
//! errors.
//!
//! `cargo test --test cli_help` alone does not build the example binaries: run
//! `cargo build --examples` first (plain `cargo test` does).

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_session::{CorruptReason, Error};

mod cli_support;
use cli_support::{EX_USAGE, Run, bare_client_command, run};

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
    let malformed = agent_session::Token::new("").expect_err("an empty token is malformed");
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
