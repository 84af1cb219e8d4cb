//! The session as a `reqwest-middleware` middleware, with re-authentication: the client never
//! handles a token, and a session the agent ended (no token yet, or after a lock-all) is
//! unlocked again with `AGENT_PASSWORD` and the call replayed.
//!
//! ```text
//! AGENT_PASSWORD=secret cargo run --example agent -- --http-listen 127.0.0.1:50052 &
//! AGENT_PASSWORD=secret cargo run --example reqwest_middleware --features reqwest-middleware -- 127.0.0.1:50052 [SESSION_DIR]
//! ```
//!
//! The session file is `SESSION_DIR/token`; without `SESSION_DIR`, as for the `client` example:
//! `AGENT_SESSION_DIR`, else `agent-session` in the user's runtime or config directory.

use std::path::PathBuf;
use std::process::ExitCode;

use reqwest_middleware::ClientBuilder;
use tower_agent_session::{BoxError, Session, SessionMiddleware, Token, TokenFile};
use tower_agent_session_agent::{
    HTTP_ECHO_PATH, HTTP_LOCK_ALL_PATH, HTTP_STATUS_PATH, HTTP_UNLOCK_PATH,
};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A failed unlock is the crate's `Error::Reauthentication` inside the middleware's
            // error: print each cause once, down to the agent's answer.
            eprintln!("error: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let agent = args.next().unwrap_or_else(|| "127.0.0.1:50052".into());
    let session_dir = args
        .next()
        .map(PathBuf::from)
        .or_else(default_session_dir)
        .ok_or("no session directory: pass one, or set AGENT_SESSION_DIR")?;
    let base = format!("http://{agent}");

    let session = Session::new(TokenFile::in_dir(&session_dir));
    session.start().await?;

    // The unlock goes over a client without the middleware: it carries a password, not the
    // session's token.
    let plain = reqwest::Client::new();
    let unlock_url = format!("{base}{HTTP_UNLOCK_PATH}");
    let unlock = move || {
        let reply = std::env::var("AGENT_PASSWORD")
            .map(|password| plain.post(unlock_url.clone()).body(password).send());
        async move {
            println!("(unlocking with AGENT_PASSWORD)");
            let reply = reply?.await?.error_for_status()?;
            Ok::<_, BoxError>(Token::new(reply.text().await?)?)
        }
    };
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SessionMiddleware::new(session.clone()).reauthenticate_with(unlock))
        .build();

    let status = client
        .get(format!("{base}{HTTP_STATUS_PATH}"))
        .send()
        .await?;
    println!("status: {}", status.error_for_status()?.text().await?);
    let echo = client
        .post(format!("{base}{HTTP_ECHO_PATH}"))
        .body("hello over reqwest-middleware")
        .send()
        .await?;
    println!("echo: {}", echo.error_for_status()?.text().await?);

    // End every session; the next call is refused, unlocked again, and replayed.
    client
        .post(format!("{base}{HTTP_LOCK_ALL_PATH}"))
        .send()
        .await?
        .error_for_status()?;
    println!("locked all sessions");
    let echo = client
        .post(format!("{base}{HTTP_ECHO_PATH}"))
        .body("replayed after the lock-all")
        .send()
        .await?;
    println!("echo: {}", echo.error_for_status()?.text().await?);
    if let Some(file) = session.file() {
        println!("session file: {}", file.path().display());
    }
    Ok(())
}

/// `AGENT_SESSION_DIR`, else `agent-session` in the user's runtime directory, else in their
/// config directory (as the `client` example): never the current directory, where the session
/// file would land in whatever repository the example runs from.
fn default_session_dir() -> Option<PathBuf> {
    std::env::var_os("AGENT_SESSION_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            dirs::runtime_dir()
                .or_else(dirs::config_dir)
                .map(|dir| dir.join("agent-session"))
        })
}
