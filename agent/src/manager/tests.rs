//! The manager's unit tests: the key, the cache of verified tokens, the refresh of a second.

use super::*;
use crate::jwt;

#[test]
fn debug_hides_the_key() {
    let manager = SessionManager::new().unwrap();
    let text = format!("{manager:?}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[test]
fn refresh_is_refused_after_a_rotation() {
    let manager = SessionManager::new().unwrap();
    let token = manager.mint().unwrap();
    let key = manager.verify_key(&token).unwrap();
    assert!(matches!(manager.refresh(&key), Some(Ok(_))));
    manager.lock_all().unwrap();
    assert!(manager.refresh(&key).is_none());
}

/// The bytes of a token, as the layer looks them up in the cache.
fn bytes(token: &Token) -> &[u8] {
    token.expose().as_bytes()
}

#[test]
fn a_verified_token_is_recognised_by_its_bytes() {
    let manager = SessionManager::new().unwrap();
    let token = manager.mint().unwrap();
    assert!(
        manager.verify_cached(bytes(&token)).is_none(),
        "not verified yet"
    );
    assert_eq!(manager.verify(&token), Ok(()));
    assert!(matches!(manager.verify_cached(bytes(&token)), Some(Ok(_))));
    // Another key's token with the same claims is not the cached one.
    // One character of the signature changed, away from its end: the last one also carries
    // padding bits, and a change there can make the base64 non-canonical (Malformed) instead.
    let mut forged = token.expose().as_bytes().to_vec();
    let at = forged.len() - 5;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(manager.verify_cached(forged.as_bytes()).is_none());
    assert_eq!(
        manager.verify(&Token::new(forged).unwrap()),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn a_locked_all_token_is_refused_even_if_cached() {
    let manager = SessionManager::new().unwrap();
    let token = manager.mint().unwrap();
    let key = manager.verify_key(&token).unwrap();
    let refresh = manager.refresh(&key).unwrap().unwrap();
    let refreshed = Token::new(refresh.to_str().unwrap().strip_prefix("Bearer ").unwrap()).unwrap();
    // The cache is direct-mapped: the two may share a slot (1 in 128), so each is verified (and
    // so cached) just before it is looked up.
    for token in [&token, &refreshed] {
        assert_eq!(manager.verify(token), Ok(()));
        assert!(matches!(manager.verify_cached(bytes(token)), Some(Ok(_))));
    }
    let old = manager.shared.key.load_full();

    manager.lock_all().unwrap();
    for token in [&token, &refreshed] {
        assert!(manager.verify_cached(bytes(token)).is_none());
        assert_eq!(manager.verify(token), Err(VerifyError::InvalidSignature));
    }
    // The old key's cache is empty too, for a call that loaded the key just before.
    assert_eq!(old.verified.get(bytes(&token)), None);
    assert!(old.refresh.load().is_none());
}

#[test]
fn an_expired_cached_token_is_refused() {
    let manager = SessionManager::new()
        .unwrap()
        .with_lifetime(Duration::from_secs(60))
        .with_leeway(Duration::from_secs(2));
    let now = SystemTime::now();
    let token = manager.mint().unwrap();
    assert!(manager.verify_key_at(&token, now).is_ok());
    let exp = token.expires_at().unwrap();

    let within_leeway = exp + Duration::from_secs(2);
    assert!(manager.verify_key_at(&token, within_leeway).is_ok());
    assert!(matches!(
        manager.verify_cached_at(bytes(&token), within_leeway),
        Some(Ok(_))
    ));
    let past = exp + Duration::from_secs(3);
    assert!(matches!(
        manager.verify_cached_at(bytes(&token), past),
        Some(Err(VerifyError::Expired))
    ));
    assert_eq!(
        manager.verify_key_at(&token, past).err(),
        Some(VerifyError::Expired)
    );
}

/// Issue 26, item 8: a token signed with the agent's key whose `exp` is no time (past what a
/// `SystemTime` holds, as `{"exp":1e300}`; the client's `Token::expires_at` is `None`) is
/// refused as malformed, not taken as never expiring, and not cached. This agent never mints
/// one (`mint_expiring_at` takes a `SystemTime`), so whatever signed it is not this agent's
/// minting, and a token no expiry ends would stay valid until the next lock all.
#[test]
fn a_signed_token_whose_exp_is_no_time_is_malformed() {
    let manager = SessionManager::new().unwrap();
    let key = manager.shared.key.load_full();
    let signed =
        |claims: &str| Token::new(jwt::sign_claims(&key.hs256, claims.as_bytes())).unwrap();
    let last = i64::MAX.unsigned_abs();
    for claims in [
        r#"{"exp":1e300}"#.to_owned(),
        format!(r#"{{"exp":{}}}"#, last + 1),
        format!(r#"{{"exp":{}}}"#, u64::MAX),
    ] {
        let token = signed(&claims);
        assert_eq!(token.expires_at(), None, "{claims}");
        assert_eq!(
            manager.verify(&token),
            Err(VerifyError::Malformed),
            "{claims}"
        );
        assert!(manager.verify_cached(bytes(&token)).is_none(), "{claims}");
    }
    // The last second a Unix `SystemTime` holds is a time like any other: far off, so valid.
    // (Windows' ends sooner, 100 ns from 1601: there that second is no time either.)
    let far = signed(&format!(r#"{{"exp":{last}}}"#));
    let expected = if cfg!(unix) {
        Ok(())
    } else {
        Err(VerifyError::Malformed)
    };
    assert_eq!(manager.verify(&far), expected);
}

#[test]
fn an_expired_token_is_not_cached() {
    let manager = SessionManager::new().unwrap();
    let stale = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert_eq!(manager.verify(&stale), Err(VerifyError::Expired));
    assert!(manager.verify_cached(bytes(&stale)).is_none());
}

#[test]
fn a_refresh_is_minted_once_a_second() {
    let manager = SessionManager::new().unwrap();
    let token = manager.mint().unwrap();
    let key = manager.verify_key(&token).unwrap();
    let second = UNIX_EPOCH + Duration::from_secs(unix_secs(SystemTime::now()));
    let refresh = |at: SystemTime| manager.refresh_at(&key, at).unwrap().unwrap();

    let first = refresh(second);
    assert!(first.is_sensitive());
    let same = refresh(second + Duration::from_millis(999));
    assert_eq!(
        first.as_bytes(),
        same.as_bytes(),
        "byte-identical within the second"
    );
    let next = refresh(second + Duration::from_secs(1));
    assert_ne!(
        first.as_bytes(),
        next.as_bytes(),
        "a new one the next second"
    );

    // The refresh is one the key signed, and already known to its cache.
    let next_token = Token::new(next.to_str().unwrap().strip_prefix("Bearer ").unwrap()).unwrap();
    assert!(matches!(
        manager.verify_cached(bytes(&next_token)),
        Some(Ok(_))
    ));
    assert_eq!(manager.verify(&next_token), Ok(()));

    // A manager with another lifetime mints its own: the `exp` differs.
    let longer = manager.clone().with_lifetime(DEFAULT_LIFETIME * 2);
    let other = longer
        .refresh_at(&key, second + Duration::from_secs(1))
        .unwrap()
        .unwrap();
    assert_ne!(other.as_bytes(), next.as_bytes());
}

#[test]
fn concurrent_refreshes_of_a_second_are_one() {
    let manager = SessionManager::new().unwrap();
    let key = manager.verify_key(&manager.mint().unwrap()).unwrap();
    let at = SystemTime::now();
    let values: Vec<HeaderValue> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| manager.refresh_at(&key, at).unwrap().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(values.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn leeway_is_applied_and_configurable() {
    let manager = SessionManager::new().unwrap();
    // The default, read back rather than timed: a token expired "just now" would be
    // accepted only if the check ran within the grace of the mint, which a loaded machine
    // does not promise.
    assert!(
        format!("{manager:?}").contains(&format!("leeway: {DEFAULT_LEEWAY:?}")),
        "{manager:?}"
    );
    let expired = manager
        .mint_expiring_at(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let lenient = manager.clone().with_leeway(Duration::from_secs(3600));
    assert_eq!(lenient.verify(&expired), Ok(()));
    let strict = manager.clone().with_leeway(Duration::ZERO);
    assert_eq!(strict.verify(&expired), Err(VerifyError::Expired));
    assert_eq!(manager.verify(&expired), Err(VerifyError::Expired));
}
