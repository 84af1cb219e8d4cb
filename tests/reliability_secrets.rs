//! Secrets: a whole session (no token, unlock, refreshes, a token from another process, a
//! malformed refresh, a corrupt file, a failed write, lock all, re-authentication, a failed
//! re-authentication, lock) runs with a `tracing` subscriber at TRACE for every target,
//! capturing all it says; then `Debug` and `Display` of every public type and error are
//! collected. No token, and not the password, may appear in any of it. The session's files are
//! 0600 and its directories 0700, whatever the umask.
// Unix only: Unix modes and umask (the README's "Platforms" lists every such test).
#![cfg(unix)]

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tower_agent_session::store::TokenStore as _;

use http::{HeaderValue, Request, Response, header};
use tonic::transport::Channel;
use tower::{Layer as _, Service as _, ServiceBuilder, ServiceExt as _};
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use tower_agent_session::{
    CorruptReason, Error, MalformedToken, Session, SessionLayer, Token, TokenFile,
    layer::SessionService,
};
use tower_agent_session_agent::{Agent, AuthLayer, NoRefresh, SessionManager, VerifyError};
use tracing_subscriber::util::SubscriberInitExt as _;

mod reliability_common;
use reliability_common::{PASSWORD, serve};

/// Everything every subscriber of this test binary was told, as text.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_thread_names(true)
            .with_writer(move || Sink(sink.clone()))
            .finish()
            .try_init()
            .expect("the only global subscriber of this test binary");
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The secrets seen so far: every token, in whole and the parts of a JWT that are its own (the
/// header part is the same for every token of an agent).
#[derive(Clone, Default)]
struct Secrets(Arc<Mutex<Vec<String>>>);

impl Secrets {
    fn add(&self, secret: &str) {
        let mut all = self.0.lock().unwrap();
        all.push(secret.to_owned());
        for part in secret.split('.').skip(1).filter(|p| p.len() >= 16) {
            all.push(part.to_owned());
        }
    }

    fn token(&self, token: &Token) {
        self.add(token.expose());
    }

    fn add_refreshed(&self, metadata: &tonic::metadata::MetadataMap) {
        for value in metadata.get_all("authorization").iter() {
            let bytes = value.as_encoded_bytes();
            let text = String::from_utf8_lossy(bytes);
            if let Some(token) = text.strip_prefix("Bearer ") {
                self.add(token);
            }
        }
    }

    /// Panics naming the kind of text that holds a secret (never the secret).
    fn assert_absent(&self, what: &str, text: &str) {
        for secret in self.0.lock().unwrap().iter() {
            assert!(
                !text.contains(secret.as_str()),
                "a secret ({} bytes) shows in {what}",
                secret.len()
            );
        }
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn unlock(channel: Channel, password: &str) -> Result<Token, tonic::Status> {
    let reply = AgentServiceClient::new(channel)
        .session_unlock(PasswordMessage {
            password: password.into(),
        })
        .await?;
    Token::new(reply.into_inner().token).map_err(|e| tonic::Status::internal(e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_session_at_trace_level_never_logs_a_token() {
    let log = log();
    let secrets = Secrets::default();
    secrets.add(PASSWORD);
    let manager = SessionManager::new().unwrap();
    let agent = serve(Agent::new(manager.clone(), PASSWORD)).await;
    let address = agent.address.to_string();
    let channel = reliability_common::channel(&address).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client").join("token");
    // Watches the file (the default), so that the pick-up of other processes' tokens and of a
    // corrupt file is part of the run.
    let session = Session::new(tower_agent_session::TokenFile::new(&path));
    session.start().await.unwrap();
    let mut client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel.clone()),
    );
    let mut shown: Vec<String> = Vec::new();

    // No token yet.
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    let error = Error::from_status(&status).unwrap();
    assert!(matches!(error, Error::TokenNotProvided));
    shown.push(format!("{status:?} {status} {error:?} {error}"));

    // Unlock, then refreshing calls.
    let unlocked = unlock(channel.clone(), PASSWORD).await.unwrap();
    secrets.token(&unlocked);
    session.start_with_token(unlocked).await.unwrap();
    for i in 0..5 {
        let reply = client
            .echo(EchoMessage {
                challenge: format!("call {i}"),
            })
            .await
            .unwrap();
        secrets.add_refreshed(reply.metadata());
        shown.push(format!("{reply:?}"));
    }
    session.flush().await.unwrap();
    secrets.token(&session.file().unwrap().load().unwrap().token.unwrap());

    // Another process unlocks; this one picks the token up.
    let other = Session::new(tower_agent_session::TokenFile::new(&path));
    let theirs = unlock(channel.clone(), PASSWORD).await.unwrap();
    secrets.token(&theirs);
    let since = session.epoch();
    other.start_with_token(theirs).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), session.changed_since(since))
        .await
        .expect("the other process's token is picked up");
    let reply = client.agent_status(EmptyMessage {}).await.unwrap();
    secrets.add_refreshed(reply.metadata());
    assert!(session.stats().external_changes >= 1);

    // A call by hand, with the session's credentials.
    let mut request = tonic::Request::new(EmptyMessage {});
    session.authorize(&mut request).unwrap();
    shown.push(format!("{request:?}"));
    shown.push(format!("{:?}", session.call_credentials().unwrap()));
    let reply = AgentServiceClient::new(channel.clone())
        .agent_status(request)
        .await
        .unwrap();
    secrets.add_refreshed(reply.metadata());

    // A malformed refresh from a hostile agent: warned about, with its reason only.
    secrets.add("hostile.refresh.value");
    let hostile = tower::service_fn(|_: Request<()>| async {
        let mut response = Response::new(());
        response.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer hostile.refresh.value and more"),
        );
        Ok::<_, Infallible>(response)
    });
    let mut hostile_service = SessionLayer::new(session.clone()).layer(hostile);
    let response = hostile_service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    shown.push(format!("{response:?}"));

    // A corrupt file: the session keeps its token and warns; `start` fails.
    secrets.add("corrupt.file.value");
    std::fs::write(&path, "corrupt.file.value with a space\n").unwrap();
    let reply = client.agent_status(EmptyMessage {}).await.unwrap();
    secrets.add_refreshed(reply.metadata());
    session.flush().await.ok();
    let corrupt = Session::new(tower_agent_session::TokenFile::new(&path))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(corrupt, Error::CorruptFile { .. }));
    shown.push(format!("{corrupt:?} {corrupt}"));
    let token = session.token().unwrap();
    session.start_with_token(token).await.unwrap();

    // A write that cannot happen: the session directory is a file.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, "").unwrap();
    let stuck = Session::new(tower_agent_session::TokenFile::new(blocked.join("token")));
    let failed = stuck
        .start_with_token(session.token().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(failed, Error::WriteFile { .. }), "{failed:?}");
    shown.push(format!("{failed:?} {failed}"));

    // Lock all: the next call is refused as invalid.
    let locked = client.sessions_lock_all(EmptyMessage {}).await.unwrap();
    shown.push(format!("{locked:?}"));
    let status = client.agent_status(EmptyMessage {}).await.unwrap_err();
    let error = Error::from_status(&status).unwrap();
    assert!(matches!(error, Error::TokenInvalid));
    shown.push(format!("{status:?} {status} {error:?} {error}"));

    // Re-authentication: the layer unlocks and replays.
    let reauth_channel = channel.clone();
    let reauth_secrets = secrets.clone();
    let password = Arc::new(Mutex::new(PASSWORD.to_owned()));
    let reauth_password = password.clone();
    let layer = SessionLayer::new(session.clone()).reauthenticate_with(move || {
        let channel = reauth_channel.clone();
        let secrets = reauth_secrets.clone();
        let password = reauth_password.lock().unwrap().clone();
        async move {
            let token = unlock(channel, &password).await?;
            secrets.token(&token);
            Ok::<_, tonic::Status>(token)
        }
    });
    shown.push(format!("{layer:?}"));
    let mut reauth_client =
        AgentServiceClient::new(ServiceBuilder::new().layer(layer).service(channel.clone()));
    let reply = reauth_client.agent_status(EmptyMessage {}).await.unwrap();
    secrets.add_refreshed(reply.metadata());
    session.flush().await.unwrap();

    // A failed re-authentication: lock all, then a wrong password.
    reauth_client
        .sessions_lock_all(EmptyMessage {})
        .await
        .unwrap();
    *password.lock().unwrap() = "wrong password".into();
    let status = reauth_client
        .agent_status(EmptyMessage {})
        .await
        .unwrap_err();
    let error = Error::from_status(&status);
    assert!(
        matches!(error, Some(Error::Reauthentication(_))),
        "{status:?}"
    );
    shown.push(format!("{status:?} {status} {error:?}"));
    shown.push(format!("{session:?} {:?}", session.stats()));

    // Lock.
    session.clear().await.unwrap();
    assert!(!path.exists());
    drop((client, reauth_client, hostile_service, agent));

    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    // The library's events are there (the session's come from its blocking threads), beside
    // those of tonic, hyper and h2.
    let ours = text
        .lines()
        .filter(|l| l.contains("tower_agent_session"))
        .count();
    assert!(
        text.contains("tower_agent_session::session"),
        "the subscriber captured the session's events"
    );
    secrets.assert_absent("the TRACE log", &text);
    for (i, shown) in shown.iter().enumerate() {
        secrets.assert_absent(&format!("Debug/Display #{i}"), shown);
    }
    println!(
        "secrets: a whole session logged {} lines ({ours} from this crate, {} bytes) at TRACE \
         for every target; {} secrets (tokens, their JWT parts, the password) appear in none \
         of them, nor in {} Debug/Display texts of responses, requests, statuses and errors",
        text.lines().count(),
        text.len(),
        secrets.len(),
        shown.len()
    );
}

/// An error and every source below it, as `Display` and `Debug`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} {error:?}");
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(" / {e} {e:?}"));
        source = e.source();
    }
    text
}

#[tokio::test]
async fn debug_and_display_of_every_public_type_hide_the_token() {
    let _ = log();
    let secret = "s3cr3t.t0ken.value";
    let token = Token::new(secret).unwrap();
    let secrets = Secrets::default();
    secrets.add(secret);
    secrets.add(PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let session = Session::builder(tower_agent_session::TokenFile::new(&path)).build();
    session.start_with_token(token.clone()).await.unwrap();
    let file = TokenFile::new(&path);
    let mut texts: Vec<(&str, String)> = vec![
        ("Token", format!("{token:?} {token}")),
        ("Token header", format!("{:?}", token.header_value())),
        ("Session", format!("{session:?}")),
        (
            "SessionBuilder",
            format!(
                "{:?}",
                Session::builder(tower_agent_session::TokenFile::new(&path))
            ),
        ),
        ("SessionStats", format!("{:?}", session.stats())),
        ("TokenFile", format!("{file:?}")),
        (
            "call credentials",
            format!("{:?}", session.call_credentials()),
        ),
    ];

    let layer = SessionLayer::new(session.clone());
    texts.push(("SessionLayer", format!("{layer:?}")));
    let reauth = SessionLayer::new(session.clone())
        .reauthenticate_with(|| async { Token::new("x").map_err(Error::from) });
    texts.push(("SessionLayer<Reauth>", format!("{reauth:?}")));
    let refresh = token.header_value();
    let inner = tower::service_fn(move |_: Request<()>| {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(header::AUTHORIZATION, refresh.clone());
        async move { Ok::<_, Infallible>(response) }
    });
    let mut service: SessionService<_> = layer.layer(inner);
    texts.push(("SessionService", format!("{service:?}")));
    let future = service.call(Request::new(()));
    texts.push(("ResponseFuture", format!("{future:?}")));
    let response = future.await.unwrap();
    texts.push(("a response through the layer", format!("{response:?}")));

    // Every error, and what is inside them.
    let malformed = Token::new(format!("{secret} with space")).unwrap_err();
    let errors: Vec<Error> = vec![
        Error::TokenNotProvided,
        Error::TokenInvalid,
        Error::MalformedToken(malformed),
        Error::ReadFile {
            path: path.clone(),
            source: Arc::new(io::Error::from(io::ErrorKind::PermissionDenied)),
        },
        Error::WriteFile {
            path: path.clone(),
            source: Arc::new(io::Error::from(io::ErrorKind::StorageFull)),
        },
        Error::Reauthentication(Arc::new(io::Error::other("the agent said no"))),
        Error::CorruptFile {
            path: path.clone(),
            reason: CorruptReason::Malformed(malformed),
        },
    ];
    for error in &errors {
        texts.push(("Error", chain(error)));
        texts.push((
            "Status",
            format!("{:?}", tonic::Status::from(error.clone())),
        ));
    }
    std::fs::write(&path, format!("{secret} with space\n")).unwrap();
    texts.push((
        "a real CorruptFile",
        chain(&file.load().map(|stored| stored.token).unwrap_err()),
    ));
    std::fs::write(&path, format!("{secret}\u{ff}\n")).unwrap();
    texts.push((
        "a real NotUtf8",
        chain(&file.load().map(|stored| stored.token).unwrap_err()),
    ));
    for reason in [
        CorruptReason::NotUtf8,
        CorruptReason::NotAFile,
        CorruptReason::TooLarge { len: 1, limit: 0 },
    ] {
        texts.push(("CorruptReason", format!("{reason:?} {reason}")));
    }
    for why in [
        MalformedToken::Empty,
        MalformedToken::TooLong { len: 1 },
        MalformedToken::InvalidCharacter { position: 3 },
    ] {
        texts.push(("MalformedToken", format!("{why:?} {why}")));
    }

    // The agent's side.
    let manager = SessionManager::new().unwrap();
    let minted = manager.mint().unwrap();
    secrets.token(&minted);
    let agent = Agent::new(manager.clone(), PASSWORD);
    texts.push(("SessionManager", format!("{manager:?}")));
    texts.push(("Agent", format!("{agent:?}")));
    let auth = AuthLayer::new(manager.clone());
    texts.push(("AuthLayer", format!("{auth:?}")));
    let mut auth_service = auth.layer(tower::service_fn(|_: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    texts.push(("AuthService", format!("{auth_service:?}")));
    let request = Request::builder()
        .header(header::AUTHORIZATION, minted.header_value())
        .body(String::new())
        .unwrap();
    texts.push(("a request to the agent", format!("{request:?}")));
    let future = auth_service.call(request);
    texts.push(("agent ResponseFuture", format!("{future:?}")));
    let response = future.await.unwrap();
    texts.push(("an agent response", format!("{response:?}")));
    if let Some(value) = response.headers().get(header::AUTHORIZATION) {
        let refreshed = value.to_str().unwrap().strip_prefix("Bearer ").unwrap();
        secrets.add(refreshed);
    }
    texts.push(("NoRefresh", format!("{NoRefresh:?}")));
    for error in [
        VerifyError::Expired,
        VerifyError::InvalidSignature,
        VerifyError::Malformed,
    ] {
        texts.push(("VerifyError", format!("{error:?} {error}")));
    }
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("key");
    SessionManager::with_key_file(&key_file).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let key_error = SessionManager::with_key_file(&key_file).unwrap_err();
    texts.push(("KeyError", chain(&key_error)));

    for (what, text) in &texts {
        secrets.assert_absent(what, text);
    }
    // The log of anything said meanwhile, too.
    let log = String::from_utf8(log().lock().unwrap().clone()).unwrap();
    secrets.assert_absent("the log", &log);
    println!(
        "secrets: Debug/Display of {} values of the public types and errors show no token and \
         not the password",
        texts.len()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_session_files_are_private_whatever_the_umask() {
    // SAFETY: umask has no preconditions. It is process-wide: nothing else in this binary
    // depends on it (tempfile and the library set their modes explicitly).
    let old = unsafe { libc::umask(0) };
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("home").join("client");
    let session =
        Session::builder(tower_agent_session::TokenFile::new(client.join("token"))).build();
    session
        .start_with_token(Token::new("first").unwrap())
        .await
        .unwrap();
    let refresh = Token::new("refreshed").unwrap().header_value();
    let inner = tower::service_fn(move |_: Request<()>| {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(header::AUTHORIZATION, refresh.clone());
        async move { Ok::<_, Infallible>(response) }
    });
    SessionLayer::new(session.clone())
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    session.flush().await.unwrap();
    assert_eq!(session.stats().writes, 1);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    assert_eq!(mode(&dir.path().join("home")), 0o700);
    assert_eq!(mode(&client), 0o700);
    assert_eq!(mode(session.file().unwrap().path()), 0o600);
    assert_eq!(mode(session.file().unwrap().lock_path()), 0o600);
    println!(
        "secrets: with umask 0, the directories made are 0700 and the session and lock files 0600"
    );
}
