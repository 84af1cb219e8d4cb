use super::*;

/// One directory named three ways is one entry, and its companion is in it.
#[test]
fn a_directory_named_in_any_way_is_one_entry() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("session");
    let backend = KeyringBackend::native();
    let first = KeyringStore::in_dir(backend, "s", &dir).unwrap();
    assert!(dir.is_dir(), "made when missing");
    let mut trailing = dir.clone().into_os_string();
    trailing.push(std::path::MAIN_SEPARATOR_STR);
    let others = [
        KeyringStore::in_dir(backend, "s", &trailing).unwrap(),
        KeyringStore::in_dir(backend, "s", dir.join("..").join("session")).unwrap(),
    ];
    for other in &others {
        assert_eq!(other.account(), first.account());
        assert_eq!(other.companion(), first.companion());
    }
    let canonical = dunce::canonicalize(&dir).unwrap();
    assert_eq!(first.account(), canonical.to_string_lossy());
    assert_eq!(first.companion(), canonical.join(KeyringStore::COMPANION));
    // On Windows, the plain form, as a user would write it (std's is `\\?\C:\…`).
    assert!(!first.account().starts_with(r"\\?\"), "{}", first.account());
}

/// A directory that cannot be made is a typed error naming it.
#[test]
fn a_directory_that_cannot_be_made_is_a_typed_error() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("a file");
    std::fs::write(&file, "").unwrap();
    let error =
        KeyringStore::in_dir(KeyringBackend::native(), "s", file.join("session")).unwrap_err();
    assert!(matches!(error, Error::WriteFile { .. }), "{error:?}");
}

/// A path that is not UTF-8 names no entry: two of them could not be told apart by their text.
#[cfg(target_os = "linux")]
#[test]
fn a_directory_whose_path_is_not_utf8_is_a_typed_error() {
    use std::os::unix::ffi::OsStrExt as _;
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join(std::ffi::OsStr::from_bytes(b"session-\xff"));
    let error = KeyringStore::in_dir(KeyringBackend::native(), "s", &dir).unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    let said = std::error::Error::source(&error).map(ToString::to_string);
    assert!(said.is_some_and(|s| s.contains("not UTF-8")), "{error:?}");
}
