//! Lock races refresh: one process has a call in flight, which the agent holds until the test
//! releases it, while another process runs `lock` (removes the session file) or `unlock`
//! (writes a new token). When the held call's response comes back with its refreshed token, the
//! refresh must not recreate the file after a lock, nor replace the unlocked token after an
//! unlock: a refresh is a compare-and-swap against what its process last saw in the file.
//!
//! The agent signals the test when the held call arrives and waits for the test to release it,
//! both through channels. `RELIABILITY_SCALE=n` multiplies the rounds.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tower_agent_session::store::TokenStore as _;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder};
use tower_agent_session::proto::{AgentServiceClient, ECHO_PATH, EchoMessage, PasswordMessage};
use tower_agent_session::{Session, SessionLayer, Token, TokenFile};
use tower_agent_session_agent::{Agent, SessionManager};

mod reliability_common;
use reliability_common::{
    ChildProcess, PASSWORD, PROCESS_TIMEOUT, child_role, counts, fail, param, runtime, say, scaled,
    small_runtime,
};

const CHILD_ENTRY: &str = "child_entry_does_nothing_in_a_normal_run";
const ROUNDS: u64 = 50;

#[test]
fn child_entry_does_nothing_in_a_normal_run() {
    let Some(role) = child_role() else { return };
    let dir = PathBuf::from(param("SESSION_DIR"));
    let rt = small_runtime();
    match role.as_str() {
        "caller" => rt.block_on(caller(dir)),
        "lock" => {
            let session = Session::new(tower_agent_session::TokenFile::in_dir(&dir));
            rt.block_on(async {
                session.start().await?;
                session.clear().await
            })
            .unwrap_or_else(|e| fail(e));
            say("locked");
        }
        "unlock" => rt.block_on(async {
            let reply = AgentServiceClient::new(reliability_common::channel(&param("AGENT")).await)
                .session_unlock(PasswordMessage {
                    password: PASSWORD.into(),
                })
                .await
                .unwrap_or_else(|status| fail(format_args!("{status:?}")));
            let token = Token::new(reply.into_inner().token).unwrap_or_else(|e| fail(e));
            Session::new(tower_agent_session::TokenFile::in_dir(&dir))
                .start_with_token(token)
                .await
                .unwrap_or_else(|e| fail(e));
            say("unlocked");
        }),
        other => fail(format_args!("unknown role {other}")),
    }
    std::process::exit(0)
}

/// Starts a session from the file, makes one echo call through the layer (the agent holds it),
/// and reports what became of its refresh.
async fn caller(dir: PathBuf) {
    // Unwatched: the other process's change is not picked up before the refresh, so the
    // refresh's compare-and-swap is what keeps it (a watched session drops the refresh as
    // stale instead, when the change is seen first).
    let session = Session::builder(tower_agent_session::TokenFile::in_dir(&dir))
        .watch(tower_agent_session::Watch::Off)
        .build();
    session.start().await.unwrap_or_else(|e| fail(e));
    if session.token().is_none() {
        fail("no token at start");
    }
    let mut client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(reliability_common::channel(&param("AGENT")).await),
    );
    let reply = client
        .echo(EchoMessage {
            challenge: "held".into(),
        })
        .await
        .unwrap_or_else(|status| fail(format_args!("{status:?}")));
    if reply.get_ref().challenge != "held" {
        fail("the echo came back changed");
    }
    session.flush().await.unwrap_or_else(|e| fail(e));
    let s = session.stats();
    let on_disk = session
        .file()
        .unwrap()
        .load()
        .map(|stored| stored.token)
        .unwrap_or_else(|e| fail(e));
    say(format_args!(
        "done refreshes={} writes={} lost={} has_token={} token_is_the_files={}",
        s.refreshes,
        s.writes,
        s.lost_refreshes,
        u8::from(session.token().is_some()),
        u8::from(session.token() == on_disk),
    ));
}

/// Holds every echo call until the test releases it, and tells the test when one arrived.
#[derive(Clone)]
struct Hold<S> {
    inner: S,
    arrivals: mpsc::Sender<oneshot::Sender<()>>,
}

impl<S, B> Service<http::Request<B>> for Hold<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let held = (request.uri().path() == ECHO_PATH).then(|| {
            let (release, released) = oneshot::channel();
            let _ = self.arrivals.send(release);
            released
        });
        Box::pin(async move {
            if let Some(released) = held {
                let _ = released.await;
            }
            inner.call(request).await
        })
    }
}

#[test]
fn a_refresh_in_flight_never_undoes_a_lock_or_an_unlock_in_another_process() {
    let rounds = scaled(ROUNDS);
    let rt = runtime();
    let manager = SessionManager::new().unwrap();
    let agent = Agent::new(manager.clone(), PASSWORD);
    let (arrivals_tx, arrivals) = mpsc::channel();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_stop, stopped) = oneshot::channel::<()>();
    let hold = tower::layer::layer_fn(move |inner| Hold {
        inner,
        arrivals: arrivals_tx.clone(),
    });
    // The auth layer outside: the held call's token is checked, and its refresh minted, as
    // for any call; only the answer waits.
    let server = tonic::transport::Server::builder()
        .layer(agent.auth_layer())
        .layer(hold)
        .add_service(agent.into_server())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        );
    rt.spawn(server);

    let (mut locks, mut unlocks) = (0u64, 0u64);
    for round in 0..2 * rounds {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::in_dir(dir.path());
        // Expiring well before a refresh will, so that the refresh is worth writing: the
        // caller does try, and must lose.
        let first = manager
            .mint_expiring_at(SystemTime::now() + Duration::from_secs(600))
            .unwrap();
        file.store(&first).unwrap();
        let params = [
            ("SESSION_DIR", dir.path().display().to_string()),
            ("AGENT", address.clone()),
        ];
        let mut caller = ChildProcess::spawn(CHILD_ENTRY, "caller", &params);
        let release = arrivals
            .recv_timeout(PROCESS_TIMEOUT)
            .expect("the caller's call reaches the agent");

        let unlock = round % 2 == 1;
        let mut other =
            ChildProcess::spawn(CHILD_ENTRY, if unlock { "unlock" } else { "lock" }, &params);
        other.expect(if unlock { "unlocked" } else { "locked" });
        other.wait_success();
        let unlocked = file.load().unwrap().token;
        if unlock {
            let unlocked = unlocked.as_ref().expect("the unlock wrote its token");
            assert_ne!(*unlocked, first);
            manager.verify(unlocked).unwrap();
        } else {
            assert!(unlocked.is_none() && !file.path().exists(), "the lock ran");
        }

        release.send(()).expect("the held call is still waiting");
        let report = counts(&caller.expect("done"));
        caller.wait_success();
        assert_eq!(
            (report["refreshes"], report["writes"], report["lost"]),
            (1, 0, 1),
            "round {round}: the caller's refresh came back, was tried, and lost"
        );
        if unlock {
            assert_eq!(
                file.load().unwrap().token,
                unlocked,
                "round {round}: the unlocked token survives the refresh"
            );
            assert_eq!(
                (report["has_token"], report["token_is_the_files"]),
                (1, 1),
                "round {round}: the caller goes on with the unlocked token"
            );
            unlocks += 1;
        } else {
            assert!(
                !file.path().exists(),
                "round {round}: the refresh recreated the file after a lock"
            );
            assert_eq!(
                report["has_token"], 0,
                "round {round}: the caller is locked too"
            );
            locks += 1;
        }
    }
    println!(
        "lock races refresh: {locks} rounds of lock and {unlocks} of unlock in another process \
         while a refreshing call was held in flight; every refresh came back and lost its \
         compare-and-swap: no file recreated after a lock, no unlocked token replaced"
    );
}
