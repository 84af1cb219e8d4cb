//! The crate docs' table of tracing events says what the crate emits: every event in the
//! table is emitted by the source, at the level the table gives, and every event the source
//! emits is in the table. (A review found five rows nothing emitted and ten events no row
//! named.) Read from the source text: an event is a `tracing::<level>!` call with a message.

use std::collections::BTreeSet;
use std::path::Path;

/// `(level, message)` of every event `tracing::<level>!(…, "message")` in `src/`, tests aside.
fn emitted() -> BTreeSet<(String, String)> {
    let mut events = BTreeSet::new();
    let mut files = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        let name = path.to_string_lossy();
        if !name.ends_with(".rs")
            || name.ends_with("tests.rs")
            || name.contains("/tests/")
            || name.contains("/model")
            || name.contains("/proto/")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for level in ["trace", "debug", "info", "warn", "error"] {
            let macro_call = format!("tracing::{level}!(");
            let mut rest = text.as_str();
            while let Some(at) = rest.find(&macro_call) {
                rest = &rest[at + macro_call.len()..];
                let Some(message) = message_of(rest) else {
                    continue;
                };
                events.insert((level.to_uppercase(), message));
            }
        }
    }
    events
}

/// The message of a macro call whose arguments start `args`: its one string literal, with
/// line continuations joined.
fn message_of(args: &str) -> Option<String> {
    let call = &args[..args.find(");").unwrap_or(args.len())];
    let start = call.find('"')? + 1;
    let end = start + call[start..].find("\"")?;
    let literal = &call[start..end];
    let mut message = String::new();
    let mut parts = literal.split("\\\n");
    message.push_str(parts.next()?);
    for part in parts {
        message.push_str(part.trim_start());
    }
    Some(message)
}

/// `(level, message)` of every row of the crate docs' table.
fn documented() -> BTreeSet<(String, String)> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let section = lib
        .split("//! # Tracing")
        .nth(1)
        .expect("a Tracing section")
        .split("//! # ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("//! |")?.split(" | ").collect();
            let level = cells.first()?.trim().trim_matches('`');
            let message = cells.get(1)?.trim().trim_matches('`');
            let level_ok = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level);
            level_ok.then(|| (level.to_owned(), message.to_owned()))
        })
        .collect()
}

#[test]
fn the_tracing_table_lists_exactly_the_events_emitted() {
    let emitted = emitted();
    let documented = documented();
    assert!(emitted.len() > 20, "too few events found: {emitted:?}");
    let undocumented: Vec<_> = emitted.difference(&documented).collect();
    let unemitted: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        undocumented.is_empty() && unemitted.is_empty(),
        "emitted, not in the table: {undocumented:#?}\nin the table, not emitted: {unemitted:#?}"
    );
}
