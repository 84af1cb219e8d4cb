use std::io::{Seek, Write};

use super::*;
use crate::TokenStore;

/// Another process rewrites the session file in place with a token of the same length, on a
/// filesystem whose clock is coarser than the writes: the file's `stat` is what it was. A poll
/// cannot tell; an event (the OS saying the file changed) reads the file and sees the token.
#[test]
fn an_event_reads_the_file_even_when_its_stamp_did_not_move() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = TokenFile::in_dir(dir.path());
    // No watch of its own: the looks below are the test's.
    let session = Session::builder(file.clone()).watch(Watch::Off).build();
    let first = Token::new("a".repeat(40)).unwrap();
    let second = Token::new("b".repeat(40)).unwrap();
    runtime
        .block_on(session.start_with_token(first.clone()))
        .unwrap();
    let before = file.version().unwrap();

    let modified = std::fs::metadata(file.path()).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(file.path()).unwrap();
    let mut rewrite = std::fs::OpenOptions::new()
        .write(true)
        .open(file.path())
        .unwrap();
    rewrite.rewind().unwrap();
    rewrite
        .write_all(text.replace(first.expose(), second.expose()).as_bytes())
        .unwrap();
    rewrite.set_modified(modified).unwrap();
    drop(rewrite);
    assert_eq!(file.version().unwrap(), before, "the stamp did not move");

    session.shared.look_at_store(Look::IfMoved);
    assert_eq!(session.token(), Some(first), "a poll goes by the stamp");
    session.shared.look_at_store(Look::Read);
    assert_eq!(session.token(), Some(second), "an event reads the file");
    assert_eq!(session.stats().external_changes, 1);
}
