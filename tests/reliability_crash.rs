//! Crash mid-write: a child process writes tokens to the session file in a loop and is killed
//! with SIGKILL at random moments. After each kill the file must hold a whole token that one of
//! the writes produced (the last one acknowledged, or the one after it, whose rename landed
//! before the acknowledgement) or, when the writer was killed before its first write returned
//! (legal: nothing says how far a child gets before the kill, and a loaded machine may not get
//! it far), what the file held before that writer started, which is no token at all before the
//! first write. The temp files of dead writers must not pile up: the next process's
//! `Session::start` (when no writer holds the lock) or first explicit write removes them.
//!
//! The moments are drawn from a seeded xorshift; the seed is printed, and `RELIABILITY_SEED`
//! repeats a run. `RELIABILITY_SCALE=n` multiplies the number of kills.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tower_agent_session::store::TokenStore as _;

use tower_agent_session::{Session, Token, TokenFile};

mod reliability_common;
use reliability_common::{
    ChildProcess, XorShift, child_role, fail, hear, param, say, scaled, seed, small_runtime,
    temp_files,
};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";
const KILLS: u64 = 400;
/// Token `i` is `i` apart in each child's range, so no two children write the same token.
const RANGE: u64 = 1_000_000;

#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    match role.as_str() {
        "writer" => writer_child(),
        other => fail(format_args!("unknown role {other}")),
    }
}

/// Token number `i`: recognisable, of a length that varies from write to write (so a torn
/// file could not pass for a whole token of another length).
fn token(i: u64) -> Token {
    let pad = "abcdefghijklmnopqrstuvwxyz0123456789-_~+/"
        .chars()
        .cycle()
        .take((i.wrapping_mul(7919) % 3000) as usize);
    Token::new(format!("tok{i:012}.{}", pad.collect::<String>())).unwrap()
}

/// The number of a token written by [`token`], if it is one, whole.
fn number(token: &Token) -> Option<u64> {
    let i = token.expose().get(3..15)?.parse().ok()?;
    (self::token(i) == *token).then_some(i)
}

/// Starts a session on the file (mode `start`) or not (mode `write`), says `started`, waits
/// for `go`, then writes tokens `START`, `START+1`, … saying `wrote i` after each write returns.
fn writer_child() -> ! {
    let dir = PathBuf::from(param("SESSION_DIR"));
    let start: u64 = param("START").parse().unwrap();
    if param("MODE") == "start" {
        small_runtime()
            .block_on(Session::new(tower_agent_session::TokenFile::in_dir(&dir)).start())
            .unwrap_or_else(|e| fail(e));
    }
    say("started");
    if hear().as_deref() != Some("go") {
        fail("the parent did not say go");
    }
    let file = TokenFile::in_dir(&dir);
    for i in start.. {
        file.store(&token(i)).unwrap_or_else(|e| fail(e));
        say(format_args!("wrote {i}"));
    }
    unreachable!()
}

/// Busy-waits (no sleep: this picks a moment, it does not wait for anything).
fn spin(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Asserts that none of `stale` is left in `dir`, then forgets them.
fn assert_removed(dir: &Path, stale: &mut Vec<String>, when: &str) {
    let left: Vec<&String> = stale.iter().filter(|n| dir.join(n).exists()).collect();
    assert!(left.is_empty(), "stale temp files {left:?} survived {when}");
    stale.clear();
}

#[test]
fn sigkill_mid_write_never_tears_the_file_nor_piles_up_temp_files() {
    let seed = seed();
    let kills = scaled(KILLS);
    println!("crash mid-write: seed {seed} (set RELIABILITY_SEED to repeat)");
    let mut rng = XorShift::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_owned();
    let file = TokenFile::in_dir(&dir);

    // What the file holds, as a token number; `None` before the first write.
    let mut on_disk: Option<u64> = None;
    // Temp files seen after a kill, not yet removed by a later process.
    let mut stale: Vec<String> = Vec::new();
    let (mut acks, mut left_temp, mut unacknowledged, mut most_temp) = (0u64, 0u64, 0u64, 0usize);
    let (mut killed_before_first_write, mut unacknowledged_first) = (0u64, 0u64);
    let started = Instant::now();
    for round in 0..kills {
        let start = round * RANGE;
        let mode = if round % 2 == 0 { "start" } else { "write" };
        let mut child = ChildProcess::spawn(
            CHILD_ENTRY,
            "writer",
            &[
                ("SESSION_DIR", dir.display().to_string()),
                ("START", start.to_string()),
                ("MODE", mode.to_owned()),
            ],
        );
        child.expect("started");
        if mode == "start" {
            // The lock is free (the last writer is dead), so `start` removed them all.
            assert_eq!(temp_files(&dir), Vec::<String>::new(), "after start");
            stale.clear();
        }
        child.send("go");

        let mut last_ack: Option<u64> = None;
        let mut on_ack = |line: String, stale: &mut Vec<String>| {
            let Some(i) = line.strip_prefix("wrote ") else {
                panic!("the writer failed: {line}");
            };
            let i: u64 = i.parse().unwrap();
            assert_eq!(last_ack.map_or(start, |a| a + 1), i, "writes in order");
            if last_ack.is_none() && mode == "write" {
                assert_removed(&dir, stale, "the next explicit write");
            }
            last_ack = Some(i);
            acks += 1;
        };
        for _ in 0..rng.below(4) {
            let line = child.next_line().expect("the writer is writing");
            on_ack(line, &mut stale);
        }
        spin(Duration::from_micros(rng.below(3000)));
        let status = child.kill();
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the writer died of the kill, not of an error: {status}"
        );
        // TerminateProcess: std's kill ends the child with exit code 1.
        #[cfg(windows)]
        assert_eq!(
            status.code(),
            Some(1),
            "the writer died of the kill, not of an error: {status}"
        );
        for line in child.rest() {
            on_ack(line, &mut stale);
        }

        // `None` is legal only where no write has landed yet: a writer killed before its first
        // rename, while the file had never been written.
        let held = file
            .load()
            .map(|stored| stored.token)
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .map(|held| {
                number(&held).unwrap_or_else(|| {
                    panic!("round {round}: the file holds a token no write produced")
                })
            });
        match last_ack {
            Some(a) => {
                assert!(
                    held == Some(a) || held == Some(a + 1),
                    "round {round}: the file holds token {held:?}, acknowledged up to {a}"
                );
                unacknowledged += u64::from(held == Some(a + 1));
            }
            None => {
                // Killed before its first write returned (a loaded machine can be slow to get
                // the child that far): the file holds what it held before, or this writer's
                // first token, whose rename landed before the kill.
                assert!(
                    held == on_disk || held == Some(start),
                    "round {round}: the file holds token {held:?}; before this writer it held \
                     {on_disk:?}, and this writer acknowledged nothing"
                );
                unacknowledged_first += u64::from(held != on_disk);
                killed_before_first_write += 1;
            }
        }
        on_disk = held;

        let temps = temp_files(&dir);
        most_temp = most_temp.max(temps.len());
        left_temp += u64::from(!temps.is_empty());
        assert!(temps.len() <= 2, "temp files pile up: {temps:?}");
        for name in temps {
            if !stale.contains(&name) {
                stale.push(name);
            }
        }
    }
    // One more process starting: every stale temp file goes, the token stays.
    small_runtime()
        .block_on(Session::new(tower_agent_session::TokenFile::in_dir(&dir)).start())
        .unwrap();
    assert_eq!(temp_files(&dir), Vec::<String>::new());
    assert_eq!(
        file.load().unwrap().token.as_ref().and_then(number),
        on_disk
    );
    println!(
        "crash mid-write: {kills} SIGKILLs in {:.1?}, {acks} acknowledged writes; after every \
         kill the file held a whole token (the last acknowledged, or in {unacknowledged} kills \
         the one whose write had not been acknowledged yet) or, in \
         {killed_before_first_write} kills before the writer's first acknowledgement, what it \
         held before ({unacknowledged_first} times the writer's first token instead); \
         {left_temp} kills left a temp file, at most {most_temp} at once, each removed by the \
         next start or write",
        started.elapsed()
    );
}
