//! `SessionManager`: minting, verifying, expiry, the key file, lock-all, concurrency.
// Unix only: the agent's key file is checked by its Unix mode (0600) (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use tower_agent_session::Token;
use tower_agent_session_agent::{KEY_LEN, KeyError, SessionManager, VerifyError};

fn claims(token: &Token) -> serde_json::Value {
    let payload = token.expose().split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

/// HMAC-SHA-256 as RFC 2104 defines it, on SHA-256 alone: the check of the agent's signatures
/// shares no code with the agent's own.
fn hmac_sha256(key: &[u8; KEY_LEN], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// A token signed with `key` by the test itself: `header` and `claims` as JSON.
fn signed(key: &[u8; KEY_LEN], header: &str, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(key, message.as_bytes()));
    format!("{message}.{signature}")
}

/// A manager whose key the test knows, from a key file.
fn manager_with_key(dir: &std::path::Path, key: &[u8; KEY_LEN]) -> SessionManager {
    let path = dir.join("known.key");
    std::fs::write(&path, key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    SessionManager::with_key_file(&path).unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn mints_tokens_it_then_accepts() {
    let manager = SessionManager::new().unwrap();
    let token = manager.mint().unwrap();
    assert_eq!(manager.verify(&token), Ok(()));

    let claims = claims(&token);
    let iat = claims["iat"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    // `exp` and `iat` come from two readings of the clock, each rounded down to the second:
    // a second may begin between them.
    assert!(
        (3599..=3600).contains(&(exp - iat)),
        "default lifetime is one hour: {}",
        exp - iat
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        token.expires_at(),
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
    );

    let short = manager.clone().with_lifetime(Duration::from_secs(60));
    let claims = self::claims(&short.mint().unwrap());
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!((59..=60).contains(&lifetime), "{lifetime}");
}

#[test]
fn minted_tokens_are_standard_hs256_jwts() {
    let dir = tempfile::tempdir().unwrap();
    let key = [0x5a; KEY_LEN];
    let manager = manager_with_key(dir.path(), &key);
    let token = manager.mint().unwrap();

    let parts: Vec<&str> = token.expose().split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        panic!("three parts: {}", parts.len())
    };
    // base64url without padding: only the URL-safe alphabet.
    for part in &parts {
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{part}"
        );
    }
    assert_eq!(
        URL_SAFE_NO_PAD.decode(header).unwrap(),
        br#"{"alg":"HS256","typ":"JWT"}"#
    );
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert!(claims["iat"].is_u64() && claims["exp"].is_u64() && claims["jti"].is_string());
    let expected = hmac_sha256(&key, format!("{header}.{}", parts[1]).as_bytes());
    assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap(), expected);
}

#[test]
fn accepts_only_hs256_with_the_right_signature() {
    let dir = tempfile::tempdir().unwrap();
    let key = [0x5a; KEY_LEN];
    let manager = manager_with_key(dir.path(), &key);
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = format!(r#"{{"iat":1,"exp":{exp},"jti":"00"}}"#);
    let verify = |token: &str| manager.verify(&Token::new(token).unwrap());

    // Signed by another JWT library: the same header in another order, or with a key id.
    for header in [
        r#"{"alg":"HS256","typ":"JWT"}"#,
        r#"{"typ":"JWT","alg":"HS256"}"#,
        r#"{"alg":"HS256","kid":"agent"}"#,
    ] {
        assert_eq!(verify(&signed(&key, header, &claims)), Ok(()), "{header}");
    }

    // `alg: none`, unsigned or signed anyway, and any other algorithm, even when the HMAC
    // matches: the header decides, as in any JWT library.
    let none = signed(&key, r#"{"alg":"none","typ":"JWT"}"#, &claims);
    let (unsigned, _) = none.rsplit_once('.').unwrap();
    assert_eq!(verify(&format!("{unsigned}.")), Err(VerifyError::Malformed));
    assert_eq!(verify(&none), Err(VerifyError::Malformed));
    for alg in ["HS384", "HS512", "RS256", "ES256", "hs256", ""] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        assert_eq!(
            verify(&signed(&key, &header, &claims)),
            Err(VerifyError::Malformed),
            "{alg}"
        );
    }
    let no_alg = signed(&key, r#"{"typ":"JWT"}"#, &claims);
    assert_eq!(verify(&no_alg), Err(VerifyError::Malformed));

    // A bad signature: another key, one bit flipped, cut short, too long, padded.
    let good = signed(&key, r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
    let other_key = signed(&[0x5b; KEY_LEN], r#"{"alg":"HS256","typ":"JWT"}"#, &claims);
    assert_eq!(verify(&other_key), Err(VerifyError::InvalidSignature));
    let (message, signature) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[31] ^= 1;
    let flipped = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(verify(&flipped), Err(VerifyError::InvalidSignature));
    let short = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&bytes[..31]));
    assert_eq!(verify(&short), Err(VerifyError::InvalidSignature));
    bytes[31] ^= 1;
    bytes.push(0);
    let long = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(verify(&long), Err(VerifyError::InvalidSignature));
    assert_eq!(verify(&format!("{good}=")), Err(VerifyError::Malformed));

    // Signed with the key, but without the claims the agent needs, or expired.
    let no_exp = signed(&key, r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"iat":1}"#);
    assert_eq!(verify(&no_exp), Err(VerifyError::Malformed));
    let expired = signed(&key, r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"exp":1}"#);
    assert_eq!(verify(&expired), Err(VerifyError::Expired));
}

#[test]
fn refuses_tokens_it_did_not_sign() {
    let manager = SessionManager::new().unwrap();
    let other = SessionManager::new().unwrap();
    let theirs = other.mint().unwrap();
    assert_eq!(manager.verify(&theirs), Err(VerifyError::InvalidSignature));

    let garbage = Token::new("not.a.jwt").unwrap();
    assert_eq!(manager.verify(&garbage), Err(VerifyError::Malformed));
    let opaque = Token::new("opaque").unwrap();
    assert_eq!(manager.verify(&opaque), Err(VerifyError::Malformed));

    // Same header and claims, signature of another token: the signature is what counts.
    let mine = manager.mint().unwrap();
    let (body, _) = mine.expose().rsplit_once('.').unwrap();
    let (_, their_signature) = theirs.expose().rsplit_once('.').unwrap();
    let forged = Token::new(format!("{body}.{their_signature}")).unwrap();
    assert_eq!(manager.verify(&forged), Err(VerifyError::InvalidSignature));
}

#[test]
fn an_expired_token_is_refused() {
    let manager = SessionManager::new().unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let expired = manager.mint_expiring_at(an_hour_ago).unwrap();
    assert_eq!(manager.verify(&expired), Err(VerifyError::Expired));

    // With no grace at all, a token one second past its expiry is refused too.
    let strict = manager.clone().with_leeway(Duration::ZERO);
    let just_past = strict
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(1))
        .unwrap();
    assert_eq!(strict.verify(&just_past), Err(VerifyError::Expired));

    // Before the epoch is simply long expired.
    let ancient = manager.mint_expiring_at(SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(manager.verify(&ancient), Err(VerifyError::Expired));

    // An absurd leeway is capped rather than overflowing.
    let lax = manager.clone().with_leeway(Duration::MAX);
    assert_eq!(lax.verify(&expired), Ok(()));
    assert_eq!(lax.verify(&ancient), Err(VerifyError::Expired));
}

#[test]
fn tokens_minted_in_the_same_second_differ() {
    let manager = SessionManager::new().unwrap();
    let tokens: Vec<Token> = (0..50).map(|_| manager.mint().unwrap()).collect();
    let distinct: HashSet<&str> = tokens.iter().map(Token::expose).collect();
    assert_eq!(distinct.len(), tokens.len());

    // Two tokens with the same `iat` and `exp` still differ. Mint pairs until a pair shares
    // its second: a pair straddles a second's start at most once a second, so this ends, on
    // however slow a machine, without assuming how long a mint takes.
    let fixed = SystemTime::now() + Duration::from_secs(600);
    loop {
        let (a, b) = (
            manager.mint_expiring_at(fixed).unwrap(),
            manager.mint_expiring_at(fixed).unwrap(),
        );
        let (ca, cb) = (claims(&a), claims(&b));
        if ca["iat"] == cb["iat"] {
            assert_eq!(ca["exp"], cb["exp"]);
            assert_ne!(a, b, "two tokens of the same second are the same token");
            assert_ne!(ca["jti"], cb["jti"]);
            break;
        }
    }
}

#[test]
fn lock_all_invalidates_every_earlier_token() {
    let manager = SessionManager::new().unwrap();
    let clone = manager.clone();
    let before: Vec<Token> = (0..3).map(|_| manager.mint().unwrap()).collect();
    let long_lived = manager
        .mint_expiring_at(SystemTime::now() + Duration::from_secs(86_400 * 365))
        .unwrap();

    clone.lock_all().unwrap();

    for token in before.iter().chain([&long_lived]) {
        assert_eq!(manager.verify(token), Err(VerifyError::InvalidSignature));
    }
    let after = manager.mint().unwrap();
    assert_eq!(manager.verify(&after), Ok(()));
    assert_eq!(clone.verify(&after), Ok(()));
}

#[test]
fn the_key_file_keeps_sessions_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("agent").join("keys");
    let path = sub.join("session.key");

    let first = SessionManager::with_key_file(&path).unwrap();
    assert_eq!(first.key_file(), Some(path.as_path()));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&sub), 0o700);
    assert_eq!(mode(&dir.path().join("agent")), 0o700);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), KEY_LEN as u64);
    let token = first.mint().unwrap();

    let restarted = SessionManager::with_key_file(&path).unwrap();
    assert_eq!(restarted.verify(&token), Ok(()));

    // A lock-all rewrites the file: a restart after it does not revive old tokens.
    restarted.lock_all().unwrap();
    assert_eq!(mode(&path), 0o600);
    let after = restarted.mint().unwrap();
    let again = SessionManager::with_key_file(&path).unwrap();
    assert_eq!(again.verify(&token), Err(VerifyError::InvalidSignature));
    assert_eq!(again.verify(&after), Ok(()));
    // Nothing left behind by the atomic writes.
    assert_eq!(std::fs::read_dir(&sub).unwrap().count(), 1);
}

#[test]
fn a_bad_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();

    let short = dir.path().join("short.key");
    std::fs::write(&short, [7; KEY_LEN - 1]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        SessionManager::with_key_file(&short),
        Err(KeyError::WrongSize { len, .. }) if len == KEY_LEN as u64 - 1
    ));

    let long = dir.path().join("long.key");
    std::fs::write(&long, [7; KEY_LEN + 100]).unwrap();
    std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        SessionManager::with_key_file(&long),
        Err(KeyError::WrongSize { .. })
    ));

    let open = dir.path().join("open.key");
    std::fs::write(&open, [7; KEY_LEN]).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        SessionManager::with_key_file(&open),
        Err(KeyError::Insecure { mode: 0o644, .. })
    ));

    assert!(matches!(
        SessionManager::with_key_file(dir.path()),
        Err(KeyError::NotAFile { .. })
    ));

    // A good file written by someone else is used as it is.
    let good = dir.path().join("good.key");
    std::fs::write(&good, [7; KEY_LEN]).unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).unwrap();
    let a = SessionManager::with_key_file(&good).unwrap();
    let b = SessionManager::with_key_file(&good).unwrap();
    assert_eq!(b.verify(&a.mint().unwrap()), Ok(()));
    assert_eq!(std::fs::read(&good).unwrap(), [7; KEY_LEN]);
}

/// Mint, verify and lock-all from several threads at once; every verification is a clear answer.
fn hammer(manager: SessionManager, threads: usize, rounds: usize) {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let manager = manager.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut outcomes = (0, 0);
                barrier.wait();
                for round in 0..rounds {
                    let token = manager.mint().unwrap();
                    if (round + t) % 7 == 0 {
                        manager.lock_all().unwrap();
                    }
                    match manager.verify(&token) {
                        Ok(()) => outcomes.0 += 1,
                        Err(VerifyError::InvalidSignature) => outcomes.1 += 1,
                        Err(other) => panic!("unexpected verification error: {other:?}"),
                    }
                }
                outcomes
            })
        })
        .collect();
    let (mut ok, mut revoked) = (0, 0);
    for handle in handles {
        let (o, r) = handle.join().expect("a worker panicked");
        ok += o;
        revoked += r;
    }
    assert_eq!(ok + revoked, threads * rounds);
    // A thread that locks between its mint and its verify always sees its token revoked.
    assert!(revoked >= threads * (rounds / 7), "{revoked} revoked");

    // Afterwards the manager is coherent: old tokens out, new ones in.
    let before = manager.mint().unwrap();
    manager.lock_all().unwrap();
    assert_eq!(manager.verify(&before), Err(VerifyError::InvalidSignature));
    assert_eq!(manager.verify(&manager.mint().unwrap()), Ok(()));
}

#[test]
fn concurrent_mint_verify_and_lock_all() {
    hammer(SessionManager::new().unwrap(), 8, 500);
}

#[test]
fn concurrent_lock_all_keeps_the_key_file_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.key");
    let manager = SessionManager::with_key_file(&path).unwrap();
    hammer(manager.clone(), 4, 30);

    // The file holds the key in force: a restart accepts what the manager mints now.
    let token = manager.mint().unwrap();
    let restarted = SessionManager::with_key_file(&path).unwrap();
    assert_eq!(restarted.verify(&token), Ok(()));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
