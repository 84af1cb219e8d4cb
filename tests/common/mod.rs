//! What the transport tests share: an agent on loopback and clients of it.
#![allow(dead_code)] // each test file uses its own part of this

use std::net::SocketAddr;
use std::time::Duration;

use agent_session::agent::proto::{AgentServiceClient, PasswordMessage};
use agent_session::agent::{Agent, SessionManager};
use agent_session::{Session, Token};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

pub const PASSWORD: &str = "correct horse battery staple";

/// A running agent; dropping it stops the server.
pub struct RunningAgent {
    pub address: SocketAddr,
    pub manager: SessionManager,
    _stop: oneshot::Sender<()>,
}

pub async fn start_agent() -> RunningAgent {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let manager = SessionManager::new().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Agent::new(manager.clone(), PASSWORD).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    RunningAgent {
        address,
        manager,
        _stop: stop,
    }
}

pub async fn channel(address: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A session that looks at its file only when a test makes it, so each test controls what it
/// sees.
pub fn quiet_session(dir: &std::path::Path) -> Session {
    Session::builder(dir.join("token"))
        .check_interval(Duration::from_secs(3600))
        .build()
}

/// Unlocks over `channel` (no session layer) with `password`.
pub async fn unlock(channel: Channel, password: &str) -> Result<Token, tonic::Status> {
    let reply = AgentServiceClient::new(channel)
        .session_unlock(PasswordMessage {
            password: password.into(),
        })
        .await?
        .into_inner();
    Token::new(reply.token).map_err(|e| tonic::Status::internal(e.to_string()))
}
