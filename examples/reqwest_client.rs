//! The session layer on `reqwest::Client` (a `tower::Service<reqwest::Request>`), against the
//! agent's HTTP calls.
//!
//! ```text
//! AGENT_PASSWORD=secret cargo run --example agent -- --http-listen 127.0.0.1:50052 &
//! AGENT_PASSWORD=secret cargo run --example reqwest_client --features reqwest -- 127.0.0.1:50052 [SESSION_DIR]
//! ```
//!
//! The session file is `SESSION_DIR/token`; without `SESSION_DIR`, as for the `client` example:
//! `AGENT_SESSION_DIR`, else `agent-session` in the user's runtime or config directory.

use std::path::PathBuf;

use tower::{Service, ServiceBuilder, ServiceExt as _};
use tower_agent_session::{BoxError, Error, Session, Token};
use tower_agent_session_agent::{HTTP_ECHO_PATH, HTTP_STATUS_PATH, HTTP_UNLOCK_PATH};

#[path = "support/session_dir.rs"]
mod session_dir;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let agent = args.next().unwrap_or_else(|| "127.0.0.1:50052".into());
    let session_dir = args
        .next()
        .map(PathBuf::from)
        .or_else(session_dir::session_dir_from_env)
        .ok_or("no session directory: pass one, or set AGENT_SESSION_DIR")?;
    let base = format!("http://{agent}");

    let session = Session::new(tower_agent_session::TokenFile::in_dir(&session_dir));
    session.start().await?;
    let http = reqwest::Client::new();
    let mut client = ServiceBuilder::new()
        .layer(tower_agent_session::SessionLayer::new(session.clone()))
        .service(http.clone());

    let status = || http.get(format!("{base}{HTTP_STATUS_PATH}")).build();
    let mut response = client.ready().await?.call(status()?).await?;
    if let Some(error) = Error::from_response(&response) {
        // No token, or a dead one: unlock (without the layer) and start the session with it.
        println!("{error}: unlocking");
        let reply = http
            .post(format!("{base}{HTTP_UNLOCK_PATH}"))
            .body(std::env::var("AGENT_PASSWORD")?)
            .send()
            .await?
            .error_for_status()?;
        session
            .start_with_token(Token::new(reply.text().await?)?)
            .await?;
        response = client.ready().await?.call(status()?).await?;
    }
    println!("status: {}", response.text().await?);

    let echo = http
        .post(format!("{base}{HTTP_ECHO_PATH}"))
        .body("hello over reqwest")
        .build()?;
    println!(
        "echo: {}",
        client.ready().await?.call(echo).await?.text().await?
    );
    println!("session file: {}", session.file().unwrap().path().display());
    Ok(())
}
