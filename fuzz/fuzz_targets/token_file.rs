//! The session file's bytes, read through `TokenStore::load` on a `TokenFile`: a token exactly as written (white
//! space around it aside), nothing for a blank file, or an error that names the path and never
//! shows the content.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower_agent_session::store::TokenStore as _;
use tower_agent_session::{Error, TokenFile};

mod bounded;

#[global_allocator]
static GLOBAL: bounded::Counting = bounded::Counting;

/// One directory for the whole run (on tmpfs when `TMPDIR` says so); the file is rewritten for
/// each input.
fn path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("token");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("the session file is written");
    let file = TokenFile::new(path.clone());
    // The file's bytes, then its text and the token: a few copies of at most the cap.
    let read = bounded::within("TokenFile::load", data.len(), 6, || {
        file.load().map(|stored| stored.token)
    });

    let text = std::str::from_utf8(data).ok();
    match &read {
        Ok(Some(token)) => {
            assert_eq!(Some(token.expose()), text.map(str::trim));
            assert!(data.len() as u64 <= tower_agent_session::TokenFile::MAX_LEN);
        }
        Ok(None) => assert!(text.is_some_and(|t| t.trim().is_empty()), "{data:?}"),
        Err(Error::CorruptFile { path: named, .. }) => assert_eq!(named, path),
        Err(other) => panic!("reading a regular file: {other:?}"),
    }
    if data.len() as u64 > tower_agent_session::TokenFile::MAX_LEN {
        assert!(read.is_err(), "{} bytes read as a token", data.len());
    }
    if let Err(error) = &read {
        // Content that could be mistaken for the message's own words is not checked.
        let shown = [format!("{error}"), format!("{error:?}")];
        if let Some(t) = text
            .map(str::trim)
            .filter(|t| t.len() >= 12 && !t.contains(' '))
        {
            for shown in &shown {
                assert!(
                    !shown.contains(t) || path.to_string_lossy().contains(t),
                    "the content shows in {shown:?}"
                );
            }
        }
    }
});
