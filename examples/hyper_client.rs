//! The session layer on hyper-util's client, against the agent's HTTP calls (HTTP/1.1 here;
//! `.http2_only(true)` on the builder speaks HTTP/2 to the same port).
//!
//! ```text
//! AGENT_PASSWORD=secret cargo run --example agent -- --http-listen 127.0.0.1:50052 &
//! AGENT_PASSWORD=secret cargo run --example hyper_client -- 127.0.0.1:50052 [SESSION_DIR]
//! ```
//!
//! The session file is `SESSION_DIR/token`; without `SESSION_DIR`, as for the `client` example:
//! `AGENT_SESSION_DIR`, else `agent-session` in the user's runtime or config directory.

use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt as _};
use tower_agent_session::{BoxError, Error, Session, SessionLayer, Token};
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
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut client = ServiceBuilder::new()
        .layer(SessionLayer::new(session.clone()))
        .service(hyper.clone());

    let status = || Request::get(format!("{base}{HTTP_STATUS_PATH}")).body(Full::default());
    let mut response = client.ready().await?.call(status()?).await?;
    if let Some(error) = Error::from_response(&response) {
        // No token, or a dead one: unlock (without the layer) and start the session with it.
        println!("{error}: unlocking");
        let password = std::env::var("AGENT_PASSWORD")?;
        let unlock = Request::post(format!("{base}{HTTP_UNLOCK_PATH}"))
            .body(Full::new(Bytes::from(password)))?;
        let reply = hyper.request(unlock).await?;
        if !reply.status().is_success() {
            return Err(format!("unlock refused: {}", reply.status()).into());
        }
        let token = reply.into_body().collect().await?.to_bytes();
        session
            .start_with_token(Token::new(String::from_utf8(token.to_vec())?)?)
            .await?;
        response = client.ready().await?.call(status()?).await?;
    }
    let body = response.into_body().collect().await?.to_bytes();
    println!("status: {}", String::from_utf8_lossy(&body));

    let echo = Request::post(format!("{base}{HTTP_ECHO_PATH}"))
        .body(Full::new(Bytes::from_static(b"hello over hyper")))?;
    let body = client.ready().await?.call(echo).await?.into_body();
    println!(
        "echo: {}",
        String::from_utf8_lossy(&body.collect().await?.to_bytes())
    );
    println!("session file: {}", session.file().unwrap().path().display());
    Ok(())
}
