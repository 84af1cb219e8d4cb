//! The session's rules, driven through the layer over an in-process inner service: header
//! rules, refresh writes, the compare-and-swap against other sessions of the same file, and
//! pick-up of changes made by others. Behaviour over a real transport is in `tests/transport.rs`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use base64::Engine as _;
use http::{HeaderValue, Request, Response, header};
use tokio::sync::{Notify, oneshot};
use tower::{Layer, Service, ServiceExt};
use tower_agent_session::{AgentTokens, Session, SessionLayer, Token};

type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

fn token(s: &str) -> Token {
    Token::new(s).unwrap()
}

fn jwt(exp: u64, id: u32) -> Token {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    token(&format!(
        "{}.{}.sig{id}",
        b64.encode(r#"{"alg":"HS256"}"#),
        b64.encode(format!(r#"{{"exp":{exp},"jti":"{id}"}}"#))
    ))
}

/// An inner service that records the `authorization` it got and answers with `reply` as the
/// response's `authorization` header.
fn agent(
    reply: impl Fn() -> Option<HeaderValue> + Clone + Send + 'static,
) -> (
    impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone,
    Seen,
) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let svc = tower::service_fn(move |req: Request<()>| {
        record
            .lock()
            .unwrap()
            .push(req.headers().get(header::AUTHORIZATION).cloned());
        let reply = reply();
        async move {
            let mut response = Response::new(());
            if let Some(value) = reply {
                response.headers_mut().insert(header::AUTHORIZATION, value);
            }
            Ok::<_, Infallible>(response)
        }
    });
    (svc, seen)
}

/// A session that never looks at its file on its own during a test, so that what a test sees
/// is the compare-and-swap of refresh writes, not the pick-up of changes; and whose calls wait
/// for their writes however slow a loaded disk is, so that "durable when the call returns"
/// holds whatever the machine does.
/// A session that looks at its file only when a test makes it, and whose calls wait until
/// their refresh is durable however slow a loaded disk is: each assertion on the file right
/// after a call tests the write rules, not timing.
fn quiet_session(dir: &std::path::Path) -> Session {
    Session::builder(tower_agent_session::TokenFile::new(dir.join("token")))
        .watch(tower_agent_session::Watch::Off)
        .agent_tokens(AgentTokens::RevokedOnRefresh)
        .call_wait(Duration::from_secs(3600))
        .build()
}

/// A watched session whose calls wait until their refresh is durable.
fn durable_session(dir: &std::path::Path) -> Session {
    Session::builder(tower_agent_session::TokenFile::in_dir(dir))
        .agent_tokens(AgentTokens::RevokedOnRefresh)
        .call_wait(Duration::from_secs(3600))
        .build()
}

/// Waits until `session`'s watch has picked up another session's change made since `since`.
async fn picked_up(session: &Session, since: tower_agent_session::Epoch) {
    tokio::time::timeout(Duration::from_secs(30), session.changed_since(since))
        .await
        .expect("the watch picks the change up");
}

fn bearer(token: &Token) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(&format!("Bearer {}", token.expose())).unwrap())
}

async fn call<S>(svc: &mut S) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap()
}

#[tokio::test]
async fn attaches_a_sensitive_bearer_header() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    let (inner, seen) = agent(|| None);
    let mut svc = SessionLayer::new(session).layer(inner);
    call(&mut svc).await;
    let sent = seen.lock().unwrap()[0].clone().unwrap();
    assert_eq!(sent, "Bearer t0");
    assert!(sent.is_sensitive());
}

#[tokio::test]
async fn without_a_token_sends_no_header() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start().await.unwrap();
    let (inner, seen) = agent(|| None);
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    call(&mut svc).await;
    assert_eq!(seen.lock().unwrap()[0], None);
    assert!(matches!(
        session.call_credentials(),
        Err(tower_agent_session::Error::TokenNotProvided)
    ));
}

#[tokio::test]
async fn explicit_credentials_win_and_their_refresh_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    let (inner, seen) = agent(|| bearer(&token("theirs")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    let request = Request::builder()
        .header(header::AUTHORIZATION, "Bearer mine")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].clone().unwrap(), "Bearer mine");
    assert_eq!(session.token(), Some(token("t0")));
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("t0"))
    );
}

#[tokio::test]
async fn a_refresh_is_used_next_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    let (inner, seen) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    call(&mut svc).await;
    // The future resolved only once the refresh was durable.
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("t1"))
    );
    call(&mut svc).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen[1].clone().unwrap(), "Bearer t1");
    assert_eq!(session.stats().writes, 1);
}

#[tokio::test]
async fn legacy_and_any_case_refresh_forms_are_read() {
    for form in ["bearer t1", "BEARER t1", "Bearer: t1", " Bearer   t1 "] {
        let dir = tempfile::tempdir().unwrap();
        let session = durable_session(dir.path());
        session.start_with_token(token("t0")).await.unwrap();
        let (inner, _) = agent(move || Some(HeaderValue::from_static(form)));
        let mut svc = SessionLayer::new(session.clone()).layer(inner);
        call(&mut svc).await;
        assert_eq!(session.token(), Some(token("t1")), "{form:?}");
        assert_eq!(
            session.file().unwrap().load().unwrap().token,
            Some(token("t1")),
            "{form:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_refresh_is_ignored_and_the_response_passes_through() {
    let bad: [&[u8]; 6] = [
        b"Bearer a b",
        b"Bearer \xc3\xa9",
        b"Basic dXNlcg==",
        b"Bearer",
        b"Bearer a\tb",
        b"Bearer a,b",
    ];
    for value in bad {
        let dir = tempfile::tempdir().unwrap();
        let session = durable_session(dir.path());
        session.start_with_token(token("t0")).await.unwrap();
        let (inner, _) = agent(move || Some(HeaderValue::from_bytes(value).unwrap()));
        let mut svc = SessionLayer::new(session.clone()).layer(inner);
        let response = call(&mut svc).await;
        assert_eq!(response.headers()[header::AUTHORIZATION].as_bytes(), value);
        assert_eq!(session.token(), Some(token("t0")));
        assert_eq!(
            session.file().unwrap().load().unwrap().token,
            Some(token("t0"))
        );
    }
}

/// Repeated `authorization` values that disagree are no refresh, even when the first is the
/// token in use: the comparison that spares a parse must not skip the rule that repeated
/// values agree. The session's write failed, so that the token in use is not on disk: taken
/// again as a refresh, it would be counted and written again.
#[tokio::test]
async fn repeated_values_that_disagree_are_no_refresh_though_the_first_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    // The session file's directory is a file: nothing can be written there.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let session = Session::new(tower_agent_session::TokenFile::in_dir(&blocker));
    assert!(session.start_with_token(token("t0")).await.is_err());
    let mut disagreeing = http::HeaderMap::new();
    for value in ["Bearer t0", "Bearer t1"] {
        disagreeing.append(header::AUTHORIZATION, HeaderValue::from_static(value));
    }

    let sent = session.epoch();
    session
        .refresh(sent, http::StatusCode::OK, &disagreeing)
        .await;
    assert_eq!(session.stats().refreshes, 0, "Session::refresh took it");

    let reply = disagreeing.clone();
    let agent = tower::service_fn(move |_: Request<()>| {
        let mut response = Response::new(());
        *response.headers_mut() = reply.clone();
        async move { Ok::<_, Infallible>(response) }
    });
    let mut svc = SessionLayer::new(session.clone()).layer(agent);
    let response = call(&mut svc).await;
    assert_eq!(
        response
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .count(),
        2
    );
    assert_eq!(session.stats().refreshes, 0, "the layer took it");
    assert_eq!(session.token(), Some(token("t0")));
}

#[tokio::test]
async fn a_refresh_loses_to_an_explicit_write_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let ours = quiet_session(dir.path());
    ours.start_with_token(token("t0")).await.unwrap();
    // Another process unlocks and writes its own token.
    let theirs = Session::new(tower_agent_session::TokenFile::in_dir(dir.path()));
    theirs.start_with_token(token("unlocked")).await.unwrap();
    let (inner, _) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(ours.clone()).layer(inner);
    call(&mut svc).await;
    assert_eq!(
        ours.file().unwrap().load().unwrap().token,
        Some(token("unlocked"))
    );
    assert_eq!(
        ours.token(),
        Some(token("unlocked")),
        "adopts what the file holds"
    );
    assert_eq!(ours.stats().lost_refreshes, 1);
}

#[tokio::test]
async fn a_refresh_never_resurrects_a_cleared_session() {
    let dir = tempfile::tempdir().unwrap();
    let ours = quiet_session(dir.path());
    ours.start_with_token(token("t0")).await.unwrap();
    // Another process locks.
    Session::new(tower_agent_session::TokenFile::in_dir(dir.path()))
        .clear()
        .await
        .unwrap();
    let (inner, _) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(ours.clone()).layer(inner);
    call(&mut svc).await;
    assert!(!ours.file().unwrap().path().exists());
    assert_eq!(ours.token(), None);
}

#[tokio::test]
async fn a_refresh_of_a_call_sent_before_clear_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    let arrived = Arc::new(Notify::new());
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let inner = {
        let arrived = arrived.clone();
        tower::service_fn(move |_req: Request<()>| {
            let arrived = arrived.clone();
            let release = release.lock().unwrap().take();
            async move {
                arrived.notify_one();
                if let Some(release) = release {
                    let _ = release.await;
                }
                let mut response = Response::new(());
                response
                    .headers_mut()
                    .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t1"));
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    let in_flight = tokio::spawn(async move { call(&mut svc).await });
    arrived.notified().await;
    session.clear().await.unwrap();
    release_tx.send(()).unwrap();
    in_flight.await.unwrap();
    session.flush().await.unwrap();
    assert!(
        !session.file().unwrap().path().exists(),
        "the refresh recreated the file"
    );
    assert_eq!(session.token(), None);
}

#[tokio::test]
async fn a_token_written_by_another_process_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Session::new(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ));
    ours.start_with_token(token("t0")).await.unwrap();
    let (inner, seen) = agent(|| None);
    let mut svc = SessionLayer::new(ours.clone()).layer(inner);
    call(&mut svc).await;
    let since = ours.epoch();
    Session::new(tower_agent_session::TokenFile::in_dir(dir.path()))
        .start_with_token(token("other"))
        .await
        .unwrap();
    picked_up(&ours, since).await;
    call(&mut svc).await;
    let since = ours.epoch();
    Session::new(tower_agent_session::TokenFile::in_dir(dir.path()))
        .clear()
        .await
        .unwrap();
    picked_up(&ours, since).await;
    call(&mut svc).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].clone().unwrap(), "Bearer t0");
    assert_eq!(seen[1].clone().unwrap(), "Bearer other");
    assert_eq!(seen[2], None);
    assert_eq!(ours.stats().external_changes, 2);
}

#[tokio::test]
async fn with_the_watch_off_the_file_is_not_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .watch(tower_agent_session::Watch::Off)
    .build();
    ours.start_with_token(token("t0")).await.unwrap();
    let (inner, seen) = agent(|| None);
    let mut svc = SessionLayer::new(ours.clone()).layer(inner);
    Session::new(tower_agent_session::TokenFile::in_dir(dir.path()))
        .start_with_token(token("other"))
        .await
        .unwrap();
    call(&mut svc).await;
    assert_eq!(seen.lock().unwrap()[0].clone().unwrap(), "Bearer t0");
}

#[tokio::test]
async fn a_refresh_that_buys_no_time_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens live until they expire (the default): a refresh that expires no later than the
    // stored token is not written.
    let session = Session::new(tower_agent_session::TokenFile::in_dir(dir.path()));
    let first = jwt(2_000_000_000, 0);
    session.start_with_token(first.clone()).await.unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let (inner, _) = agent(move || {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Same exp for the first three refreshes, then a later one.
        let exp = if i <= 3 { 2_000_000_000 } else { 2_000_000_060 };
        bearer(&jwt(exp, i))
    });
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    for _ in 0..3 {
        call(&mut svc).await;
    }
    session.flush().await.unwrap();
    assert_eq!(session.stats().skipped_writes, 3);
    assert_eq!(session.stats().writes, 0);
    assert_eq!(session.file().unwrap().load().unwrap().token, Some(first));
    assert_eq!(
        session.token(),
        Some(jwt(2_000_000_000, 3)),
        "used in memory"
    );
    call(&mut svc).await;
    session.flush().await.unwrap();
    assert_eq!(session.stats().writes, 1);
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(jwt(2_000_000_060, 4))
    );
}

#[tokio::test]
async fn opaque_refreshes_are_always_written() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let (inner, _) = agent(move || {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bearer(&token(&format!("t{i}")))
    });
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    for i in 1..=3 {
        call(&mut svc).await;
        assert_eq!(
            session.file().unwrap().load().unwrap().token,
            Some(token(&format!("t{i}")))
        );
    }
    assert_eq!(session.stats().writes, 3);
}

#[tokio::test]
async fn tokens_that_live_until_expiry_are_written_behind_and_flush_waits() {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .build();
    session.start_with_token(token("t0")).await.unwrap();
    let (inner, _) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    call(&mut svc).await;
    session.flush().await.unwrap();
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        Some(token("t1"))
    );
}

#[tokio::test]
async fn start_reads_the_file_and_a_bad_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "t0\n").unwrap();
    let session = Session::new(tower_agent_session::TokenFile::new(&path));
    session.start().await.unwrap();
    assert_eq!(session.token(), Some(token("t0")));
    std::fs::write(&path, "not a token\n").unwrap();
    let err = Session::new(tower_agent_session::TokenFile::new(&path))
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, tower_agent_session::Error::CorruptFile { .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 65);
}

#[tokio::test]
async fn a_failed_write_is_reported_and_keeps_the_token_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    // The session file's directory is a file: nothing can be written there.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let session = Session::new(tower_agent_session::TokenFile::in_dir(&blocker));
    let err = session.start_with_token(token("t0")).await.unwrap_err();
    assert!(
        matches!(err, tower_agent_session::Error::WriteFile { .. }),
        "{err:?}"
    );
    assert_eq!(session.token(), Some(token("t0")));
    let (inner, _) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    call(&mut svc).await;
    assert_eq!(session.token(), Some(token("t1")));
    assert!(session.flush().await.is_err());
}

#[tokio::test]
async fn without_a_token_sent_a_token_on_the_response_is_not_a_refresh() {
    // An unlock answers with a token in `authorization`; the application starts the session
    // with it, the layer does not write it behind its back.
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start().await.unwrap();
    let (inner, _) = agent(|| bearer(&token("minted")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    call(&mut svc).await;
    assert_eq!(session.token(), None);
    assert!(!session.file().unwrap().path().exists());
}

#[tokio::test]
async fn the_refreshed_header_handed_over_is_marked_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    let (inner, _) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    let response = call(&mut svc).await;
    let header = &response.headers()[header::AUTHORIZATION];
    assert_eq!(header, "Bearer t1", "the bytes pass through");
    assert!(header.is_sensitive());
    assert!(!format!("{response:?}").contains("t1"));
}

/// Many calls at once, each bringing a later JWT, with the file watched: this process's own
/// writes must never pass for another's, and (when refreshes revoke) no call may resolve
/// before the file holds a token at least as fresh as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_never_taken_for_another_process() {
    const TASKS: usize = 16;
    const CALLS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("token"),
    ))
    .agent_tokens(tower_agent_session::AgentTokens::RevokedOnRefresh)
    .build();
    session.start_with_token(jwt(1_000, 0)).await.unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let inner = tower::service_fn(move |_req: Request<()>| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut response = Response::new(());
            let refreshed = jwt(1_000 + n, n as u32);
            response
                .headers_mut()
                .insert(header::AUTHORIZATION, refreshed.header_value());
            Ok::<_, Infallible>((response, refreshed))
        }
    });
    // Keep the token each call got next to its response.
    let svc = SessionLayer::new(session.clone()).layer(tower::util::MapResponse::new(
        inner,
        |(mut response, refreshed): (Response<()>, Token)| {
            response.extensions_mut().insert(refreshed);
            response
        },
    ));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let mut svc = svc.clone();
            let session = session.clone();
            tokio::spawn(async move {
                for _ in 0..CALLS {
                    let response = call(&mut svc).await;
                    let own = response.extensions().get::<Token>().unwrap().expires_at();
                    let on_disk = session
                        .file()
                        .unwrap()
                        .load()
                        .map(|stored| stored.token)
                        .unwrap()
                        .unwrap()
                        .expires_at();
                    assert!(
                        on_disk >= own,
                        "a call resolved before its token was durable"
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = session.stats();
    assert_eq!(stats.external_changes, 0, "{stats:?}");
    assert_eq!(stats.lost_refreshes, 0, "{stats:?}");
}

/// Unlocks in this process while refreshing calls are in flight: with no other process, no
/// refresh may "lose" to this process's own explicit writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_writes_and_refreshes_of_one_session_never_race() {
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start_with_token(token("u0")).await.unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let (inner, _) = agent(move || {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bearer(&token(&format!("r{i}")))
    });
    let svc = SessionLayer::new(session.clone()).layer(inner);
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    call(&mut svc).await;
                }
            })
        })
        .collect();
    for i in 1..=50 {
        session
            .start_with_token(token(&format!("u{i}")))
            .await
            .unwrap();
    }
    for caller in callers {
        caller.await.unwrap();
    }
    session.flush().await.unwrap();
    assert_eq!(session.stats().lost_refreshes, 0, "{:?}", session.stats());
    assert_eq!(
        session.file().unwrap().load().unwrap().token,
        session.token()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_token_twice_still_waits_for_its_write() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let session = quiet_session(dir.path());
        session.start_with_token(token("t0")).await.unwrap();
        // An agent that hands every call the same new token.
        let (inner, _) = agent(|| bearer(&token("same")));
        let svc = SessionLayer::new(session.clone()).layer(inner);
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let mut svc = svc.clone();
                let session = session.clone();
                tokio::spawn(async move {
                    call(&mut svc).await;
                    assert_eq!(
                        session.file().unwrap().load().unwrap().token,
                        Some(token("same"))
                    );
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_memory_store_follows_the_same_rules() {
    use tower_agent_session::store::MemoryStore;
    let store = MemoryStore::new();
    let ours = Session::builder(store.clone())
        .watch(tower_agent_session::Watch::Off)
        .agent_tokens(AgentTokens::RevokedOnRefresh)
        .build();
    ours.start_with_token(token("t0")).await.unwrap();
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let (inner, seen) = agent(move || {
        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bearer(&token(&format!("t{i}")))
    });
    let mut svc = SessionLayer::new(ours.clone()).layer(inner);
    call(&mut svc).await;
    assert_eq!(seen.lock().unwrap()[0].clone().unwrap(), "Bearer t0");
    assert_eq!(store.token(), Some(token("t1")), "the refresh is stored");

    // Another session of the same store unlocks: our next refresh loses and adopts it.
    Session::new(store.clone())
        .start_with_token(token("unlocked"))
        .await
        .unwrap();
    call(&mut svc).await;
    assert_eq!(store.token(), Some(token("unlocked")));
    assert_eq!(ours.token(), Some(token("unlocked")));
    assert_eq!(ours.stats().lost_refreshes, 1);

    // A clear by the other is never undone by a refresh.
    Session::new(store.clone()).clear().await.unwrap();
    call(&mut svc).await;
    assert_eq!(store.token(), None);
    assert_eq!(ours.token(), None);
}

#[tokio::test]
async fn a_refresh_that_finds_a_blank_file_keeps_the_session() {
    // A shell's `echo … > token` truncates the file before it writes: a refresh write that
    // comes in between finds it blank, and must not take that for a lock.
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    std::fs::write(dir.path().join("token"), "").unwrap();
    let (inner, _) = agent(|| bearer(&token("t1")));
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    call(&mut svc).await;
    assert_eq!(
        session.token(),
        Some(token("t1")),
        "the session was cleared"
    );
    assert_eq!(
        session.stats().lost_refreshes,
        1,
        "the write found the blank file"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("token")).unwrap(),
        ""
    );
}

/// A request's own credentials go as they are, none of the session's added, and every one of
/// them marked sensitive (kept out of `Debug` and of HTTP/2's compression table), a repeated
/// header too.
#[tokio::test]
async fn own_credentials_are_sent_as_they_are_and_all_marked_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let session = durable_session(dir.path());
    session.start_with_token(token("t0")).await.unwrap();
    // One value (which the layer's insert replaces, then puts back), and a repeated header.
    for owns in [
        &["Basic dXNlcjpwdw=="][..],
        &["Bearer mine", "Basic dXNlcjpwdw=="],
    ] {
        own_credentials_sent_as_they_are(&session, owns).await;
    }
}

async fn own_credentials_sent_as_they_are(session: &Session, owns: &[&'static str]) {
    // Each value's bytes, and whether it is marked sensitive.
    type Values = Arc<Mutex<Vec<(Vec<u8>, bool)>>>;
    let seen: Values = Arc::default();
    let record = seen.clone();
    let inner = tower::service_fn(move |request: Request<()>| {
        record.lock().unwrap().extend(
            request
                .headers()
                .get_all(header::AUTHORIZATION)
                .iter()
                .map(|value| (value.as_bytes().to_vec(), value.is_sensitive())),
        );
        async { Ok::<_, Infallible>(Response::new(())) }
    });
    let mut svc = SessionLayer::new(session.clone()).layer(inner);
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert("te", HeaderValue::from_static("trailers"));
    for own in owns {
        request
            .headers_mut()
            .append(header::AUTHORIZATION, HeaderValue::from_static(own));
    }
    svc.ready().await.unwrap().call(request).await.unwrap();
    let sent: Vec<_> = owns
        .iter()
        .map(|own| (own.as_bytes().to_vec(), true))
        .collect();
    assert_eq!(*seen.lock().unwrap(), sent);
}
