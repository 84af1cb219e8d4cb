//! The session layer on a tonic channel, with re-authentication: a call refused for its
//! session unlocks with `AGENT_PASSWORD` and is replayed.
//!
//! ```text
//! AGENT_PASSWORD=secret cargo run --example agent -- --listen 127.0.0.1:50051 &
//! AGENT_PASSWORD=secret cargo run --example tonic_client -- 127.0.0.1:50051 [SESSION_DIR]
//! ```
//!
//! The session file is `SESSION_DIR/token`; without `SESSION_DIR`, as for the `client` example:
//! `AGENT_SESSION_DIR`, else `agent-session` in the user's runtime or config directory.

use std::path::PathBuf;

use tonic::transport::Endpoint;
use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use tower_agent_session::{BoxError, Session, Token};

#[path = "support/session_dir.rs"]
mod session_dir;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let agent = args.next().unwrap_or_else(|| "127.0.0.1:50051".into());
    let session_dir = args
        .next()
        .map(PathBuf::from)
        .or_else(session_dir::session_dir_from_env)
        .ok_or("no session directory: pass one, or set AGENT_SESSION_DIR")?;

    let session = Session::new(tower_agent_session::TokenFile::in_dir(&session_dir));
    session.start().await?;
    let channel = Endpoint::from_shared(format!("http://{agent}"))?
        .connect()
        .await?;

    // The unlock call needs no token: it goes over the channel without the layer.
    let password_channel = channel.clone();
    let unlock = move || {
        let mut agent = AgentServiceClient::new(password_channel.clone());
        async move {
            let password = std::env::var("AGENT_PASSWORD")?;
            let reply = agent.session_unlock(PasswordMessage { password }).await?;
            println!("unlocked");
            Ok::<_, BoxError>(Token::new(reply.into_inner().token)?)
        }
    };
    let service = ServiceBuilder::new()
        .layer(tower_agent_session::SessionLayer::new(session.clone()).reauthenticate_with(unlock))
        .service(channel);
    let mut client = AgentServiceClient::new(service);

    let status = client.agent_status(EmptyMessage {}).await?;
    println!("status: {}", status.get_ref().status);
    let echo = client
        .echo(EchoMessage {
            challenge: "hello over tonic".into(),
        })
        .await?;
    println!("echo: {}", echo.get_ref().challenge);
    session.flush().await?;
    println!("session file: {}", session.file().unwrap().path().display());
    Ok(())
}
