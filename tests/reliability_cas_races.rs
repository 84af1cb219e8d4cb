//! Two processes race compare-and-swap refresh writes (`TokenStore::swap` on a `TokenFile`) on one file.
//!
//! Each token names a generation: `gen<n>.w<writer>`. A process reads the file, then swaps in
//! generation n+1 expecting the generation n it read; after a success it expects what it wrote,
//! after a loss it reads again. The writers' lock makes each read-compare-write one step, so
//! every success replaced exactly the token its writer expected and no update is lost: the
//! successes of both processes are generations 1, 2, …, final, each once. Without the lock,
//! two writers can both find generation n and both "succeed" in writing n+1, and the counts
//! no longer add up.
//!
//! The children are this test binary run again (see `reliability_common`). The file is on a
//! memory filesystem where there is one, so that a few thousand swaps take a moment.
//! `RELIABILITY_SCALE=n` multiplies the attempts.

use std::path::PathBuf;
use tower_agent_session::store::{Swap, TokenStore as _};

use tower_agent_session::{Token, TokenFile};

mod reliability_common;
use reliability_common::{
    ChildProcess, child_role, counts, fail, fast_tempdir, hear, param, say, scaled,
};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";
const WRITERS: u64 = 2;
const ATTEMPTS: u64 = 1500;

#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "swapper" => swapper_child(),
        other => fail(format_args!("unknown role {other}")),
    }
}

fn token(generation: u64, writer: u64) -> Token {
    Token::new(format!("gen{generation:010}.w{writer}")).unwrap()
}

fn generation(token: &Token) -> u64 {
    token
        .expose()
        .strip_prefix("gen")
        .and_then(|rest| rest.get(..10))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a generation token"))
}

/// Says `ready`, waits for `go`, makes `ATTEMPTS` compare-and-swaps, and reports its successes
/// and the sum of the generations they wrote.
fn swapper_child() -> ! {
    let file = TokenFile::in_dir(PathBuf::from(param("SESSION_DIR")));
    let writer: u64 = param("WRITER").parse().unwrap();
    let attempts: u64 = param("ATTEMPTS").parse().unwrap();
    let read = || {
        file.load()
            .map(|stored| stored.token)
            .unwrap_or_else(|e| fail(e))
            .unwrap_or_else(|| fail("the file holds no token"))
    };
    say("ready");
    if hear().as_deref() != Some("go") {
        fail("the parent did not say go");
    }
    let (mut swaps, mut sum, mut lost) = (0u64, 0u64, 0u64);
    let mut expected = read();
    for _ in 0..attempts {
        let next = generation(&expected) + 1;
        let new = token(next, writer);
        match file.swap(Some(&expected), &new) {
            Ok(Swap::Replaced(_)) => {
                swaps += 1;
                sum += next;
                expected = new;
            }
            // The other writer held the lock past the bounded wait (a loaded machine, Wine's
            // slow renames): nothing was written, which the counts below check; read again.
            Ok(Swap::Lost(_)) | Err(tower_agent_session::Error::Locked { .. }) => {
                lost += 1;
                expected = read();
            }
            Err(e) => fail(e),
        }
    }
    say(format_args!("done swaps={swaps} sum={sum} lost={lost}"));
    std::process::exit(0)
}

#[test]
fn racing_compare_and_swaps_of_two_processes_lose_no_update() {
    let attempts = scaled(ATTEMPTS);
    let dir = fast_tempdir();
    let file = TokenFile::in_dir(dir.path());
    file.store(&token(0, 0)).unwrap();

    let mut writers: Vec<ChildProcess> = (1..=WRITERS)
        .map(|writer| {
            ChildProcess::spawn(
                CHILD_ENTRY,
                "swapper",
                &[
                    ("SESSION_DIR", dir.path().display().to_string()),
                    ("WRITER", writer.to_string()),
                    ("ATTEMPTS", attempts.to_string()),
                ],
            )
        })
        .collect();
    for writer in &mut writers {
        writer.expect("ready");
    }
    // Both have started: let them go together.
    for writer in &mut writers {
        writer.send("go");
    }
    let (mut swaps, mut sum, mut lost) = (0u64, 0u64, 0u64);
    for writer in &mut writers {
        let report = counts(&writer.expect("done"));
        writer.wait_success();
        swaps += report["swaps"];
        sum += report["sum"];
        lost += report["lost"];
    }

    let last = generation(
        &file
            .load()
            .unwrap()
            .token
            .expect("the file ends with a token"),
    );
    assert_eq!(
        swaps, last,
        "{swaps} successful swaps, but the file is at generation {last}: updates were lost"
    );
    assert_eq!(
        sum,
        last * (last + 1) / 2,
        "the successes are not generations 1..={last}, each once"
    );
    assert_eq!(swaps + lost, WRITERS * attempts);
    println!(
        "compare-and-swap races: {WRITERS} processes x {attempts} attempts: {swaps} swaps (the \
         file ends at generation {last}), {lost} lost to the other process, no update lost"
    );
}
