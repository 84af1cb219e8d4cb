//! `KeyringStore` against real keyrings on this machine, the kernel's (keyutils) and a Secret
//! Service (gnome-keyring-daemon on a private bus): the store's contract, no secret on disk,
//! and each way a keyring fails, with its typed error within the bound. Each test runs again
//! inside its keyring (`keyring_support::inside`).
#![cfg(all(target_os = "linux", feature = "keyring"))]

use std::time::{Duration, Instant};

use tower_agent_session::store::{Stored, Swap, TokenStore};
use tower_agent_session::{Error, KeyringBackend, KeyringStore, Token};

mod cli_support;
mod common;
mod keyring_support;

use keyring_support::{Daemon, assert_no_secrets_on_disk, inside, store};

/// A token as the agent's are: a JWT, long enough that any 12 bytes of it are its own.
fn token(n: u32) -> Token {
    Token::new(format!(
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0ZXIiLCJuIjo{n:04}fQ.c2lnbmF0dXJlLW9mLXRoZS10ZXN0LXRva2Vu{n:04}"
    ))
    .unwrap()
}

/// The contract every store keeps (`TokenStore`'s docs), and the companion's counter.
fn follows_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    assert_eq!(store.load().unwrap().token, None);
    assert_eq!(store.version().unwrap(), None);

    let v1 = store.store(&token(1)).unwrap();
    assert_eq!(store.version().unwrap(), Some(v1));
    assert_eq!(store.load().unwrap().token, Some(token(1)));
    assert_eq!(std::fs::read_to_string(store.companion()).unwrap(), "1\n");

    // A refresh replaces only the token it expects.
    assert!(matches!(
        store.swap(Some(&token(9)), &token(2)).unwrap(),
        Swap::Lost(Stored { token: Some(t), .. }) if t == token(1)
    ));
    let Swap::Replaced(v2) = store.swap(Some(&token(1)), &token(2)).unwrap() else {
        panic!("the expected token was there");
    };
    assert_ne!(v1, v2);
    assert_eq!(store.version().unwrap(), Some(v2));
    assert_eq!(store.load().unwrap().token, Some(token(2)));
    assert_eq!(std::fs::read_to_string(store.companion()).unwrap(), "2\n");

    // Another process's store (another value, the same entry and files) sees it.
    let other = keyring_support::store(dir.path());
    assert_eq!(other.load().unwrap().token, Some(token(2)));
    assert_no_secrets_on_disk(dir.path(), &[token(1), token(2)]);

    // A clear removes the token; a refresh does not bring it back.
    store.clear().unwrap();
    assert_eq!(store.load().unwrap().token, None);
    assert_eq!(store.version().unwrap(), None);
    assert!(matches!(
        store.swap(Some(&token(2)), &token(3)).unwrap(),
        Swap::Lost(Stored { token: None, .. })
    ));
    assert_eq!(other.load().unwrap().token, None);
    // Explicit writes after a clear, from no token.
    let Swap::Replaced(_) = store.swap(None, &token(4)).unwrap() else {
        panic!("no token was expected and none was there");
    };
    assert_eq!(other.load().unwrap().token, Some(token(4)));

    // The entry deleted by hand (a keyring manager; here a store of the same entry with its
    // companion elsewhere), the companion left: no token, as after a clear. Before, it read as
    // a blank file being written, whose token the session keeps, and every refresh then lost
    // its swap to it: the session's tokens never reached the store again.
    let elsewhere = tempfile::tempdir().unwrap();
    let by_hand = KeyringStore::new(
        store.backend(),
        store.service(),
        store.account(),
        elsewhere.path(),
    );
    by_hand.clear().unwrap();
    assert!(store.companion().exists());
    assert_eq!(
        store.load().unwrap(),
        Stored {
            token: None,
            version: None
        }
    );
    // And the version says so, as the read did: else the watch reads the keyring at every look.
    assert_eq!(store.version().unwrap(), None);
    assert!(matches!(
        store.swap(Some(&token(4)), &token(5)).unwrap(),
        Swap::Lost(Stored {
            token: None,
            version: None
        })
    ));
    let Swap::Replaced(v6) = store.swap(None, &token(6)).unwrap() else {
        panic!("no token was expected and none was there");
    };
    assert_eq!(store.version().unwrap(), Some(v6));
    assert_eq!(other.load().unwrap().token, Some(token(6)));
    store.clear().unwrap();
    // Every token handed to a write, those of the swaps that lost too.
    assert_no_secrets_on_disk(dir.path(), &[1, 2, 3, 4, 5, 6, 9].map(token));
}

#[test]
fn keyutils_follows_the_store_contract() {
    if inside(
        KeyringBackend::KeyUtils,
        "keyutils_follows_the_store_contract",
    ) {
        follows_the_contract();
    }
}

#[test]
fn secret_service_follows_the_store_contract() {
    if inside(
        KeyringBackend::SecretService,
        "secret_service_follows_the_store_contract",
    ) {
        let _daemon = Daemon::start();
        follows_the_contract();
    }
}

/// The typed error of a keyring that cannot be used, for each call that asks it: which
/// backend, what to do, exit code 78, never the token, and nothing written to the companion.
/// A call that needs no keyring (no companion, so no token) answers as without one.
fn assert_unavailable(dir: &std::path::Path, backend: KeyringBackend) {
    let store = store(dir);
    let unavailable = |call: &str, error: Error| {
        assert!(
            matches!(error, Error::KeyringUnavailable { backend: b, .. } if b == backend),
            "{call}: {error:?}"
        );
        assert_eq!(error.exit_code(), 78, "{call}");
        let message = error.to_string();
        assert!(message.contains(&backend.to_string()), "{call}: {message}");
        assert!(
            message.contains("session file"),
            "{call} says what to do: {message}"
        );
        for n in [1, 5, 6] {
            assert!(!message.contains(token(n).expose()), "{call}: {message}");
        }
    };
    let nothing = Stored {
        token: None,
        version: None,
    };

    unavailable("store", store.store(&token(5)).unwrap_err());
    assert!(
        !store.companion().exists(),
        "nothing written without the keyring"
    );
    // No companion, no token: a read, and a refresh that expects one, need no keyring.
    assert_eq!(store.load().unwrap(), nothing);
    assert_eq!(store.version().unwrap(), None);
    assert!(matches!(
        store.swap(Some(&token(5)), &token(6)).unwrap(),
        Swap::Lost(stored) if stored == nothing
    ));
    unavailable("swap from none", store.swap(None, &token(6)).unwrap_err());
    unavailable("clear", store.clear().unwrap_err());
    assert!(
        !store.companion().exists(),
        "nothing written without the keyring"
    );

    // A companion that another process wrote while it had a keyring: now a read and a refresh
    // ask the keyring, and are refused as the writes are.
    tower_agent_session::TokenFile::new(store.companion())
        .store(&Token::new("1").unwrap())
        .unwrap();
    assert!(store.version().unwrap().is_some());
    unavailable("load", store.load().unwrap_err());
    unavailable("swap", store.swap(Some(&token(1)), &token(6)).unwrap_err());
    unavailable("store over it", store.store(&token(5)).unwrap_err());
    assert_eq!(
        std::fs::read_to_string(store.companion()).unwrap(),
        "1\n",
        "the companion untouched by the refused writes"
    );
}

#[test]
fn no_secret_service_on_the_bus_is_a_typed_error() {
    // The private bus, and no daemon on it (nothing is started on demand).
    if inside(
        KeyringBackend::SecretService,
        "no_secret_service_on_the_bus_is_a_typed_error",
    ) {
        let dir = tempfile::tempdir().unwrap();
        assert_unavailable(dir.path(), KeyringBackend::SecretService);
    }
}

#[test]
fn a_refused_kernel_keyring_is_a_typed_error() {
    if inside(
        KeyringBackend::KeyUtils,
        "a_refused_kernel_keyring_is_a_typed_error",
    ) {
        // The session keyring revoked under the store, as a kernel that refuses keyrings does.
        let revoked = std::process::Command::new(keyring_support::program("keyctl"))
            .args(["revoke", "@s"])
            .status()
            .unwrap();
        assert!(revoked.success());
        let dir = tempfile::tempdir().unwrap();
        assert_unavailable(dir.path(), KeyringBackend::KeyUtils);
    }
}

#[test]
fn a_stopped_secret_service_times_out_within_the_bound() {
    if !inside(
        KeyringBackend::SecretService,
        "a_stopped_secret_service_times_out_within_the_bound",
    ) {
        return;
    }
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let bound = Duration::from_millis(500);
    let store = store(dir.path()).bound(bound);
    store.store(&token(1)).unwrap();

    daemon.stop();
    let started = Instant::now();
    let error = store.load().unwrap_err();
    let took = started.elapsed();
    // A read takes no lock: its wait is the bound alone.
    assert!(
        matches!(error, Error::KeyringTimedOut { waited, .. } if waited == bound),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 75);
    // A bound, not a speed: far from a hang, well short of D-Bus's own 25 s.
    assert!(took >= bound && took < bound * 10, "took {took:?}");
    // The next call does not queue behind the hung one: refused at once, saying how long
    // the hung read was waited for (the swap's own wait would be the bound plus its lock's).
    let started = Instant::now();
    let error = store.swap(Some(&token(1)), &token(2)).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(error, Error::KeyringTimedOut { waited, .. } if waited == bound),
        "{error:?}"
    );
    assert!(took < bound / 2, "refused after {took:?}, not at once");

    // Once it answers, the store works again, and the write that timed out never landed.
    daemon.resume();
    let stored = load_once_it_answers(&store);
    assert_eq!(stored.token, Some(token(1)));
    store.clear().unwrap();
    assert_no_secrets_on_disk(dir.path(), &[token(1), token(2)]);
}

/// The store read once the keyring answers again: refused while a hung call still runs, then
/// the call's own answer (within a minute).
fn load_once_it_answers(store: &KeyringStore) -> Stored {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.load() {
            Err(Error::KeyringTimedOut { .. }) if Instant::now() < deadline => {
                std::thread::yield_now();
            }
            stored => break stored.unwrap(),
        }
    }
}

/// Write `n` of a run: an explicit write for even `n`, a refresh from `last` for odd.
fn write(store: &KeyringStore, n: u32, last: Option<&Token>) -> Result<(), Error> {
    if n.is_multiple_of(2) {
        store.store(&token(n)).map(|_| ())
    } else {
        let swapped = store.swap(last, &token(n))?;
        assert!(
            matches!(swapped, Swap::Replaced(_)),
            "write {n}: {swapped:?}"
        );
        Ok(())
    }
}

/// Writes going on when the daemon stops: the write it hangs times out after its own wait
/// (the bound plus its lock's), the next is refused at once and reports that wait, and once
/// the daemon goes on the store works again. Only the hung write may have landed.
#[test]
fn a_write_hung_by_a_stopped_secret_service_times_out_and_the_store_comes_back() {
    if !inside(
        KeyringBackend::SecretService,
        "a_write_hung_by_a_stopped_secret_service_times_out_and_the_store_comes_back",
    ) {
        return;
    }
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let bound = Duration::from_millis(500);
    // Each write its own lock wait, so that a `waited` tells whose wait it is.
    let (lock_wait, refresh_lock_wait) = (Duration::from_millis(300), Duration::from_millis(100));
    let waited_by = |n: u32| {
        bound
            + if n.is_multiple_of(2) {
                lock_wait
            } else {
                refresh_lock_wait
            }
    };
    let store = store(dir.path())
        .bound(bound)
        .companion_waits(|f| f.lock_wait(lock_wait).refresh_lock_wait(refresh_lock_wait));

    let (landed, landings) = std::sync::mpsc::channel();
    let writer = std::thread::spawn({
        let store = store.clone();
        move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut last = None;
            for n in 1.. {
                assert!(Instant::now() < deadline, "no write timed out in a minute");
                let started = Instant::now();
                match write(&store, n, last.as_ref()) {
                    Ok(()) => {
                        last = Some(token(n));
                        let _ = landed.send(n);
                    }
                    Err(Error::KeyringTimedOut { waited, .. }) => {
                        return (last, n, waited, started.elapsed());
                    }
                    Err(e) => panic!("write {n}: {e:?}"),
                }
            }
            unreachable!("a write times out before u32 runs out")
        }
    });
    // Stopped once writes are landing, while they go on.
    for _ in 0..3 {
        landings
            .recv_timeout(Duration::from_secs(60))
            .expect("writes land while the daemon runs");
    }
    daemon.stop();
    let (last, hung, waited, took) = writer.join().unwrap();
    assert_eq!(waited, waited_by(hung), "write {hung} waited its own wait");
    assert!(took >= waited && took < waited * 10, "took {took:?}");

    // The next write, of the other kind, does not queue behind the hung one: refused at once,
    // with the hung one's wait, not its own.
    let refused = hung + 1;
    let started = Instant::now();
    let error = write(&store, refused, Some(&token(hung))).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(error, Error::KeyringTimedOut { waited: w, .. } if w == waited),
        "{error:?}, the hung write waited {waited:?}"
    );
    assert_ne!(waited_by(refused), waited);
    assert!(took < bound / 2, "refused after {took:?}, not at once");

    // Going on, the daemon answers the hung write, and then the store's calls again.
    daemon.resume();
    let stored = load_once_it_answers(&store);
    assert!(
        stored.token == last || stored.token == Some(token(hung)),
        "the last write that landed or the hung one, never the refused one"
    );
    let kind = if hung.is_multiple_of(2) {
        "store"
    } else {
        "swap"
    };
    println!(
        "write {hung} ({kind}) hung; landed once the daemon went on: {}",
        stored.token == Some(token(hung))
    );
    // A refresh from what it read, and an explicit write: both land.
    let (again, explicit) = (refused + 1, refused + 2);
    let Swap::Replaced(_) = store.swap(stored.token.as_ref(), &token(again)).unwrap() else {
        panic!("the store holds what it read");
    };
    store.store(&token(explicit)).unwrap();
    assert_eq!(store.load().unwrap().token, Some(token(explicit)));
    store.clear().unwrap();
    let written: Vec<Token> = (1..=explicit).map(token).collect();
    assert_no_secrets_on_disk(dir.path(), &written);
}

#[test]
fn a_secret_service_killed_and_back() {
    if !inside(
        KeyringBackend::SecretService,
        "a_secret_service_killed_and_back",
    ) {
        return;
    }
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).bound(Duration::from_secs(5));
    store.store(&token(1)).unwrap();

    daemon.kill();
    let error = store.swap(Some(&token(1)), &token(2)).unwrap_err();
    assert!(
        matches!(error, Error::KeyringUnavailable { .. }),
        "{error:?}"
    );
    // Still the old version: the companion was not touched by the failed write.
    assert_eq!(std::fs::read_to_string(store.companion()).unwrap(), "1\n");

    // Back (the same login keyring): the next write lands, on a new connection.
    let _daemon = Daemon::start();
    let Swap::Replaced(_) = store.swap(Some(&token(1)), &token(2)).unwrap() else {
        panic!("the keyring still held the first token");
    };
    assert_eq!(store.load().unwrap().token, Some(token(2)));
    assert_no_secrets_on_disk(dir.path(), &[token(1), token(2)]);
    store.clear().unwrap();
}

/// Counts the crate's WARN events, on every thread of the process.
#[derive(Clone, Default)]
struct Warnings(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("tower_agent_session")
        {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut said = format!(
                "{}:{} ",
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0)
            );
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    said.push_str(&format!("{}={value:?} ", field.name()));
                },
            );
            eprintln!("WARN {said}");
        }
    }
}

/// A long-lived session whose keyring daemon is killed mid-way and comes back: its calls go on
/// with the token in memory, the writes fail as typed errors with one warning for them all,
/// and the first write after the keyring is back lands.
#[test]
fn calls_go_on_while_the_secret_service_is_gone() {
    use tower::Layer as _;
    use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
    use tower_agent_session::{AgentTokens, Session, SessionLayer};
    use tracing_subscriber::layer::SubscriberExt as _;

    if !inside(
        KeyringBackend::SecretService,
        "calls_go_on_while_the_secret_service_is_gone",
    ) {
        return;
    }
    let warnings = Warnings::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(warnings.clone()))
        .unwrap();
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).bound(Duration::from_secs(5));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let agent = common::start_agent().await;
        let channel = common::channel(agent.address).await;
        // Every refresh is written, so that every call asks the keyring for a write.
        let session = Session::builder(store.clone())
            .agent_tokens(AgentTokens::RevokedOnRefresh)
            .build();
        let token = common::unlock(channel.clone(), common::PASSWORD)
            .await
            .unwrap();
        session.start_with_token(token.clone()).await.unwrap();
        let mut client = AgentServiceClient::new(SessionLayer::new(session.clone()).layer(channel));
        // Every token the session held, after each call: each refresh's, each of them written.
        let mut held = vec![token];
        let mut echo = async |n: usize| {
            let message = EchoMessage {
                challenge: format!("call {n}"),
            };
            let answer = client.echo(message).await.map(|_| ());
            if let Some(token) = session.token().filter(|t| !held.contains(t)) {
                held.push(token);
            }
            answer
        };
        for n in 0..5 {
            echo(n).await.unwrap();
        }
        session.flush().await.unwrap();
        assert_eq!(warnings.0.load(std::sync::atomic::Ordering::SeqCst), 0);

        daemon.kill();
        // Calls until the agent's refreshes (a new token each second) made three writes fail:
        // every call must succeed meanwhile.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut calls = 0;
        while session.stats().failed_writes < 3 {
            assert!(
                Instant::now() < deadline,
                "no refresh was written in a minute"
            );
            echo(calls)
                .await
                .unwrap_or_else(|e| panic!("call {calls} failed with the keyring gone: {e}"));
            calls += 1;
        }
        let error = session.flush().await.unwrap_err();
        assert!(
            matches!(error, Error::KeyringUnavailable { .. }),
            "{error:?}"
        );
        let warned = warnings.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            warned, 1,
            "one warning for the {calls} calls and their failed writes"
        );

        let _daemon = Daemon::start();
        // The next refresh's write lands.
        let written = session.stats().writes;
        while session.stats().writes == written {
            assert!(
                Instant::now() < deadline,
                "no refresh was written in a minute"
            );
            echo(calls).await.unwrap();
            calls += 1;
        }
        session.flush().await.unwrap();
        assert_eq!(store.load().unwrap().token, session.token());
        assert_eq!(warnings.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        // At least the first and the refresh written once the keyring was back.
        assert!(held.len() > 1, "the refreshes went on: {}", held.len());
        assert_no_secrets_on_disk(dir.path(), &held);
        session.clear().await.unwrap();
        assert_no_secrets_on_disk(dir.path(), &held);
    });
}

/// How long a write takes: `swap` (a refresh's compare-and-swap, the write a session makes
/// most) on each keyring against the session file, median and worst of 200. A figure for the
/// README, not a test: `cargo test --all-features --test keyring -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run by hand"]
fn write_times() {
    fn times(store: &dyn TokenStore) -> (Duration, Duration) {
        store.store(&token(0)).unwrap();
        let mut took: Vec<Duration> = (0..200)
            .map(|n| {
                let started = Instant::now();
                let swapped = store.swap(Some(&token(n)), &token(n + 1)).unwrap();
                assert!(matches!(swapped, Swap::Replaced(_)));
                started.elapsed()
            })
            .collect();
        store.clear().unwrap();
        took.sort_unstable();
        (took[took.len() / 2], took[took.len() - 1])
    }
    let say = |what: &str, (median, worst): (Duration, Duration)| {
        println!("write_times: {what}: swap median {median:?}, worst {worst:?} (200 writes)");
    };
    match keyring_support::backend() {
        None => {
            let dir = tempfile::tempdir().unwrap();
            say(
                "session file",
                times(&tower_agent_session::TokenFile::in_dir(dir.path())),
            );
            inside(KeyringBackend::KeyUtils, "write_times");
            inside(KeyringBackend::SecretService, "write_times");
        }
        Some(backend) => {
            let _daemon = (backend == KeyringBackend::SecretService).then(Daemon::start);
            let dir = tempfile::tempdir().unwrap();
            say(&backend.to_string(), times(&store(dir.path())));
        }
    }
}

/// The example client with `--store keyring` (set by cli_support inside a keyring variant):
/// unlock, `status` saying where the token lives and until when, the error states, and nothing
/// secret in its directory.
#[test]
fn the_client_keeps_its_token_in_the_keyring() {
    if !inside(
        KeyringBackend::KeyUtils,
        "the_client_keeps_its_token_in_the_keyring",
    ) {
        return;
    }
    let fixture = cli_support::Fixture::new();
    fixture.unlock();
    assert!(
        !fixture.token_path().exists(),
        "no session file with --store keyring"
    );
    let status = fixture.client(&["status"]);
    status.expect_code(0).expect_stdout_line("LIVE");
    let said = status.stderr();
    assert!(
        said.contains("session: the token in the kernel keyring (keyutils)"),
        "{said}"
    );
    assert!(said.contains("valid until 20"), "{said}");
    let stored = store(&fixture.session_dir())
        .load()
        .unwrap()
        .token
        .expect("in the keyring");
    assert_no_secrets_on_disk(&fixture.session_dir(), std::slice::from_ref(&stored));

    let password_file = fixture.password_file();
    let password_file = password_file.to_str().unwrap();
    fixture
        .client(&["--password-file", password_file, "lockall"])
        .expect_code(0);
    fixture
        .client(&["status"])
        .expect_code(77)
        .expect_stderr(Error::TOKEN_NOT_PROVIDED_MESSAGE);
    // A revoked token in the keyring: 65, and the password recovers it.
    store(&fixture.session_dir()).store(&stored).unwrap();
    fixture
        .client(&["status"])
        .expect_code(65)
        .expect_stderr(Error::TOKEN_INVALID_MESSAGE);
    fixture
        .client(&["--password-file", password_file, "status"])
        .expect_code(0);
    let recovered = store(&fixture.session_dir())
        .load()
        .unwrap()
        .token
        .expect("the token the password recovered, in the keyring");
    assert_ne!(recovered, stored);
    let written = [stored, recovered];
    assert_no_secrets_on_disk(&fixture.session_dir(), &written);
    fixture.client(&["lock"]).expect_code(0);
    assert_eq!(store(&fixture.session_dir()).load().unwrap().token, None);
    assert_no_secrets_on_disk(&fixture.session_dir(), &written);
}

/// No keyring to use: the client exits 78 and says what to do; no file is written instead.
#[test]
fn the_client_without_a_keyring_exits_78() {
    if !inside(
        KeyringBackend::SecretService,
        "the_client_without_a_keyring_exits_78",
    ) {
        return;
    }
    let fixture = cli_support::Fixture::new();
    let password_file = fixture.password_file();
    fixture
        .client(&["--password-file", password_file.to_str().unwrap(), "unlock"])
        .expect_code(78)
        .expect_stderr("the Secret Service is not available")
        .expect_stderr("use the session file");
    assert!(
        !fixture.token_path().exists(),
        "never a fallback to the file"
    );
}

/// Another process's write to the keyring reaches a running session without a call: the
/// companion's watch, as the session file's. Prints how soon (a figure, not a goal).
fn picks_up_another_writer() {
    use tower_agent_session::{Session, Watch};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let session = Session::builder(store(dir.path()))
            .watch(Watch::Notify)
            .build();
        session.start_with_token(token(1)).await.unwrap();
        let mut took = Vec::new();
        for n in 2..12 {
            let since = session.epoch();
            // The other writer: the test binary again, as a process of its own.
            let started = Instant::now();
            let wrote = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "write_for_the_pickup",
                    "--exact",
                    "--include-ignored",
                    "--nocapture",
                ])
                .env("KEYRING_PICKUP_DIR", dir.path())
                .env("KEYRING_PICKUP_TOKEN", n.to_string())
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(wrote.success());
            let written = started.elapsed();
            common::picked_up(&session, since).await;
            assert_eq!(session.token(), Some(token(n)));
            took.push(started.elapsed().saturating_sub(written));
        }
        took.sort_unstable();
        println!(
            "pickup ({}): after the writer exited, median {:?}, worst {:?} (10 writes)",
            backend_name(),
            took[took.len() / 2],
            took[took.len() - 1]
        );
        let written: Vec<Token> = (1..12).map(token).collect();
        assert_no_secrets_on_disk(dir.path(), &written);
        session.clear().await.unwrap();
        assert_no_secrets_on_disk(dir.path(), &written);
    });
}

fn backend_name() -> String {
    keyring_support::backend().map_or("none".into(), |b| b.to_string())
}

/// The other process of `picks_up_another_writer`: one explicit write, then exit.
#[test]
#[ignore = "run by picks_up_another_writer as its other process"]
fn write_for_the_pickup() {
    let (Some(dir), Ok(n)) = (
        std::env::var_os("KEYRING_PICKUP_DIR"),
        std::env::var("KEYRING_PICKUP_TOKEN").map(|n| n.parse::<u32>().unwrap()),
    ) else {
        return;
    };
    store(std::path::Path::new(&dir)).store(&token(n)).unwrap();
}

#[test]
fn another_process_write_reaches_a_session_on_the_kernel_keyring() {
    let name = "another_process_write_reaches_a_session_on_the_kernel_keyring";
    keyring_support::run_inside(KeyringBackend::KeyUtils, name, picks_up_another_writer);
}

#[test]
fn another_process_write_reaches_a_session_on_the_secret_service() {
    let name = "another_process_write_reaches_a_session_on_the_secret_service";
    keyring_support::run_inside(KeyringBackend::SecretService, name, picks_up_another_writer);
}

/// An entry that holds something other than a token (bytes no writer of this crate puts
/// there) is a typed error, exit 65 as a corrupt session file, that never shows the bytes; and
/// an unlock replaces it, as it replaces a corrupt file.
#[test]
fn the_client_replaces_an_entry_that_holds_no_token() {
    if !inside(
        KeyringBackend::KeyUtils,
        "the_client_replaces_an_entry_that_holds_no_token",
    ) {
        return;
    }
    let fixture = cli_support::Fixture::new();
    fixture.unlock();
    let ours = store(&fixture.session_dir());
    let keyutils: std::sync::Arc<keyring_core::CredentialStore> =
        linux_keyutils_keyring_store::Store::new().unwrap();
    let entry =
        keyring_core::Entry::new_in_store(&keyutils, ours.service(), ours.account()).unwrap();
    let junk = b"junk-in-the-entry \xff\xfe secret-looking";
    entry.set_secret(junk).unwrap();
    assert!(matches!(ours.load(), Err(Error::CorruptEntry { .. })));

    let status = fixture.client(&["status"]);
    status
        .expect_code(65)
        .expect_stderr("entry does not hold a valid token");
    assert!(
        !status.stderr().contains("junk-in-the-entry"),
        "{}",
        status.stderr()
    );
    let password_file = fixture.password_file();
    fixture
        .client(&["--password-file", password_file.to_str().unwrap(), "unlock"])
        .expect_code(0);
    fixture.client(&["status"]).expect_code(0);
    entry.set_secret(junk).unwrap();
    fixture.client(&["lock"]).expect_code(0);
    assert_eq!(ours.load().unwrap().token, None);
}
