//! Single-use credentials, as OAuth2 refresh-token rotation has them, shared by processes.
//!
//! ```text
//! cargo run --example single_use            # 8 processes, 16 calls each
//! cargo run --example single_use -- 4       # 4 processes
//! ```
//!
//! The agent here takes no password: its unlock takes a *credential* that works once. Each use
//! answers with a session token and the next credential (in `x-next-credential`), and ends the
//! one used; a credential presented twice is taken for a stolen one, and the whole family is
//! revoked (every later unlock refused), as some OAuth2 servers do.
//!
//! The client keeps its credential in a file beside the session file, and its re-authenticator
//! reads it, unlocks and writes the next one back. With processes whose calls fail together
//! (here: K processes started on a session file whose token a lock all ended), only the
//! session's re-authentication lock keeps them from presenting the same credential: one process
//! unlocks, under the lock, and the others take its token. The run checks that no credential
//! was presented twice, that exactly one unlock happened, and that every call succeeded.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use tower_agent_session::store::TokenStore as _;

use tonic::{Request, Response, Status};
use tower::ServiceBuilder;
use tower_agent_session::proto::{
    AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage, SESSION_UNLOCK_PATH,
    SessionTokenMessage, StatusMessage,
};
use tower_agent_session::{BoxError, Session, SessionLayer, Token, TokenFile};
use tower_agent_session_agent::grpc::{AgentService, AgentServiceServer};
use tower_agent_session_agent::{AuthLayer, SessionManager};

const CALLS: usize = 16;
/// The credential file's name, beside the session file.
const CREDENTIAL: &str = "credential";

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("single_use: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("--client") => runtime.block_on(client(&args[1..])),
        count => runtime.block_on(parent(count.and_then(|n| n.parse().ok()).unwrap_or(8))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("single_use: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the agent saw of the credentials.
#[derive(Default)]
struct Credentials {
    current: u64,
    used: Vec<u64>,
    reused: u64,
    revoked: bool,
    unlocks: u64,
}

/// An agent whose unlock takes a single-use credential.
#[derive(Clone)]
struct RotatingAgent {
    manager: SessionManager,
    credentials: Arc<Mutex<Credentials>>,
}

#[tonic::async_trait]
impl AgentService for RotatingAgent {
    async fn session_unlock(
        &self,
        request: Request<PasswordMessage>,
    ) -> Result<Response<SessionTokenMessage>, Status> {
        let presented: u64 = request
            .into_inner()
            .password
            .parse()
            .map_err(|_| Status::invalid_argument("not a credential"))?;
        let next = {
            let mut credentials = self.credentials.lock().map_err(|_| Status::internal(""))?;
            if credentials.used.contains(&presented) {
                // Presented twice: stolen, as far as the agent can tell. The family goes.
                credentials.reused += 1;
                credentials.revoked = true;
            }
            if credentials.revoked || presented != credentials.current {
                return Err(Status::permission_denied("credential refused"));
            }
            credentials.used.push(presented);
            credentials.current = presented + 1;
            credentials.unlocks += 1;
            credentials.current
        };
        let token = self
            .manager
            .mint()
            .map_err(|_| Status::internal("cannot mint"))?;
        let mut response = Response::new(SessionTokenMessage {
            token: token.expose().to_owned(),
        });
        let next = next
            .to_string()
            .parse()
            .map_err(|_| Status::internal("credential"))?;
        response.metadata_mut().insert("x-next-credential", next);
        Ok(response)
    }

    async fn sessions_lock_all(
        &self,
        _request: Request<EmptyMessage>,
    ) -> Result<Response<EmptyMessage>, Status> {
        self.manager
            .lock_all()
            .map_err(|_| Status::internal("cannot lock"))?;
        Ok(Response::new(EmptyMessage {}))
    }

    async fn agent_status(
        &self,
        _request: Request<EmptyMessage>,
    ) -> Result<Response<StatusMessage>, Status> {
        Ok(Response::new(StatusMessage {
            status: "LIVE".to_owned(),
        }))
    }

    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

/// Serves the agent, starts `k` client processes on a session file whose token a lock all
/// ended, and checks what happened.
async fn parent(k: usize) -> Result<(), Failure> {
    let manager = SessionManager::new()?;
    let credentials = Arc::new(Mutex::new(Credentials {
        current: 1,
        ..Credentials::default()
    }));
    let agent = RotatingAgent {
        manager: manager.clone(),
        credentials: credentials.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let auth = AuthLayer::new(manager.clone()).allow_path(SESSION_UNLOCK_PATH);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(auth)
            .serve_with_incoming(
                AgentServiceServer::new(agent),
                tonic::transport::server::TcpIncoming::from(listener),
            ),
    );

    let dir = tempfile::tempdir()?;
    let file = TokenFile::in_dir(dir.path());
    // The session's token, and its first credential; then a lock all ends the token.
    let token = manager.mint()?;
    let file_for_write = file.clone();
    tokio::task::spawn_blocking(move || file_for_write.store(&token)).await??;
    write_credential(dir.path(), 1)?;
    manager.lock_all()?;
    println!("{k} processes start on a session file whose token a lock all ended");

    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..k)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["--client", &address.to_string()])
                .arg(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut ok = 0;
    for child in children {
        let output = child.wait_with_output().await?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("a client failed: {text}").into());
        }
        ok += text
            .trim()
            .strip_prefix("ok ")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    let seen = credentials.lock().map_err(|_| "poisoned")?;
    println!(
        "{ok} of {} calls succeeded; {} unlock(s); {} credential(s) presented twice; family {}",
        k * CALLS,
        seen.unlocks,
        seen.reused,
        if seen.revoked { "revoked" } else { "intact" }
    );
    if ok != k * CALLS || seen.unlocks != 1 || seen.reused != 0 || seen.revoked {
        return Err("the processes did not share one unlock".into());
    }
    println!("one credential used once for {k} processes; no session lost");
    Ok(())
}

/// One client process: `CALLS` concurrent calls with the session file's token, re-authenticating
/// with the credential beside it.
async fn client(args: &[String]) -> Result<(), Failure> {
    let (Some(address), Some(dir)) = (args.first(), args.get(1)) else {
        return Err("usage: single_use --client ADDR DIR".into());
    };
    let dir = PathBuf::from(dir);
    let session = Session::new(TokenFile::in_dir(&dir));
    session.start().await?;
    let endpoint = format!("http://{address}");
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;
    let unlock_channel = channel.clone();
    let reauthenticate = move || {
        let (channel, dir) = (unlock_channel.clone(), dir.clone());
        async move {
            // Under the session's re-authentication lock: no other process reads the
            // credential between this read and the write of the next one.
            let credential = read_credential(&dir)?;
            let reply = AgentServiceClient::new(channel)
                .session_unlock(PasswordMessage {
                    password: credential.to_string(),
                })
                .await?;
            let next = reply
                .metadata()
                .get("x-next-credential")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or("no next credential")?;
            write_credential(&dir, next)?;
            Ok::<_, BoxError>(Token::new(reply.into_inner().token)?)
        }
    };
    let client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()).reauthenticate_with(reauthenticate))
            .service(channel),
    );
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { client.agent_status(EmptyMessage {}).await })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        if matches!(call.await, Ok(Ok(_))) {
            ok += 1;
        }
    }
    session.flush().await?;
    println!("ok {ok}");
    Ok(())
}

fn read_credential(dir: &Path) -> Result<u64, BoxError> {
    Ok(std::fs::read_to_string(dir.join(CREDENTIAL))?
        .trim()
        .parse()?)
}

/// Replaces the credential file whole (a temp file, mode 0600, renamed over it).
fn write_credential(dir: &Path, credential: u64) -> std::io::Result<()> {
    let mut temp = tempfile::Builder::new().tempfile_in(dir)?;
    std::io::Write::write_all(&mut temp, format!("{credential}\n").as_bytes())?;
    temp.as_file().sync_all()?;
    temp.persist(dir.join(CREDENTIAL))?;
    Ok(())
}
