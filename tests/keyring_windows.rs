//! `KeyringStore` on Windows' Credential Manager (under Wine in CI: its advapi32 keeps
//! generic credentials as Windows does): the store's contract, and no secret in the companion
//! files.
#![cfg(all(windows, feature = "keyring"))]

use tower_agent_session::store::{Stored, Swap, TokenStore};
use tower_agent_session::{KeyringBackend, KeyringStore, Token};

// Its disk scan; the rest of it (keyutils, a Secret Service) is Linux's.
mod keyring_support;

fn token(n: u32) -> Token {
    Token::new(format!(
        "eyJhbGciOiJIUzI1NiJ9.eyJuIjo{n:04}fQ.c2lnbmF0dXJlLW9mLXRoZS10ZXN0{n:04}"
    ))
    .unwrap()
}

#[test]
fn the_credential_manager_follows_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().display().to_string();
    let store = KeyringStore::new(
        KeyringBackend::CredentialManager,
        "tower-agent-session test",
        account.clone(),
        dir.path(),
    );
    assert_eq!(KeyringBackend::native(), KeyringBackend::CredentialManager);
    assert_eq!(store.load().unwrap().token, None);
    let v1 = store.store(&token(1)).unwrap();
    assert_eq!(store.version().unwrap(), Some(v1));
    assert_eq!(store.load().unwrap().token, Some(token(1)));
    assert!(matches!(
        store.swap(Some(&token(9)), &token(2)).unwrap(),
        Swap::Lost(Stored { token: Some(t), .. }) if t == token(1)
    ));
    let Swap::Replaced(_) = store.swap(Some(&token(1)), &token(2)).unwrap() else {
        panic!("the expected token was there");
    };
    let other = KeyringStore::new(
        KeyringBackend::CredentialManager,
        "tower-agent-session test",
        account,
        dir.path(),
    );
    assert_eq!(other.load().unwrap().token, Some(token(2)));
    // Every file under the directory, however deep, each read or the test fails.
    let written = [token(1), token(2)];
    keyring_support::assert_no_secrets_on_disk(dir.path(), &written);
    store.clear().unwrap();
    assert_eq!(other.load().unwrap().token, None);
    keyring_support::assert_no_secrets_on_disk(dir.path(), &written);
}
