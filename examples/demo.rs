//! The whole session protocol in one run: an agent and a client on loopback, walking the three
//! states a client can start in, and the way out of each failure.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It checks every step and exits non-zero if one does not go as described. Tokens are secrets,
//! so it prints a short fingerprint of each, never the token.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use tower_agent_session::store::TokenStore as _;

use tonic::transport::{Channel, Endpoint};
use tower::ServiceBuilder;
use tower_agent_session::proto::{AgentServiceClient, EchoMessage, EmptyMessage, PasswordMessage};
use tower_agent_session::{Error, Session, SessionLayer, Token, layer::SessionService};
use tower_agent_session_agent::{Agent, SessionManager};

type Client = AgentServiceClient<SessionService<Channel>>;
type Failure = Box<dyn std::error::Error>;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Failure> {
    // The agent, in this process, on a free loopback port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(
        Agent::new(SessionManager::new()?, PASSWORD).serve(listener, async {
            let _ = stopped.await;
        }),
    );
    println!("agent listening on {address}");

    // The client: a session file in a fresh directory, and a channel wrapped in the layer.
    let dir = tempfile::tempdir()?;
    let session = Session::builder(tower_agent_session::TokenFile::new(
        dir.path().join("session").join("token"),
    ))
    .build();
    session.start().await?;
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut client: Client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(session.clone()))
            .service(channel),
    );
    println!(
        "session file: {}\n",
        session.file().unwrap().path().display()
    );

    step("1. No token: a call is refused");
    let error = expect_session_failure(&mut client).await?;
    check(
        matches!(error, Error::TokenNotProvided),
        "expected TokenNotProvided",
    )?;
    println!("   -> {error} (exit code {})", error.exit_code());

    step("2. Unlock with the password: the token is written to disk");
    unlock(&mut client, &session).await?;
    println!("   -> session file holds {}", on_disk(&session)?);

    // The agent mints one refresh a second and hands it to every call of that second, so the
    // first call trades the unlocked token for it and the next ones, within the second, bring
    // it back unchanged.
    step("3. A valid token: every call brings the agent's refresh of the second, used at once");
    for i in 1..=3 {
        let before = session.token().ok_or("no token in use")?;
        let echo = client
            .echo(EchoMessage {
                challenge: format!("hello #{i}"),
            })
            .await?;
        let after = session.token().ok_or("no token in use")?;
        check(i > 1 || before != after, "the call's refresh was not taken")?;
        println!(
            "   -> echo {:?}; token in use {} -> {}{}",
            echo.get_ref().challenge,
            fingerprint(&before),
            fingerprint(&after),
            if before == after {
                " (the same second's refresh)"
            } else {
                ""
            }
        );
    }
    // The agent's tokens live until they expire (`AgentTokens::LiveUntilExpiry`, the default):
    // a refresh is written behind the call when it expires later than the file's token, and
    // `flush` waits for that write.
    session.flush().await?;
    let newest = session.token().ok_or("no token in use")?;
    let file = on_disk(&session)?;
    println!(
        "   -> session file holds {file} ({})",
        if file == fingerprint(&newest) {
            "the newest refresh"
        } else {
            "the unlocked token: the refreshes expire in the same second, so it lives as long"
        }
    );

    step("   A second later, a refresh that expires later is written back");
    // The agent's tokens count in whole seconds: wait for the next one.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    tokio::time::sleep(std::time::Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 10_000_000,
    ))
    .await;
    client
        .echo(EchoMessage {
            challenge: "a second later".into(),
        })
        .await?;
    session.flush().await?;
    let newest = fingerprint(&session.token().ok_or("no token in use")?);
    let file = on_disk(&session)?;
    check(file == newest, "the later refresh was not written")?;
    println!("   -> session file holds {file}, the token in use");

    step("4. Lock all: every token issued so far is invalid");
    let old = session.token().ok_or("no token before lock all")?;
    client.sessions_lock_all(EmptyMessage {}).await?;
    println!(
        "   -> lock all done; the client still holds {}",
        fingerprint(&old)
    );
    let error = expect_session_failure(&mut client).await?;
    check(
        matches!(error, Error::TokenInvalid),
        "expected TokenInvalid",
    )?;
    println!("   -> {error} (exit code {})", error.exit_code());

    step("5. Unlock again: calls work");
    unlock(&mut client, &session).await?;
    let status = client.agent_status(EmptyMessage {}).await?;
    println!(
        "   -> status {}; session file holds {}",
        status.get_ref().status,
        on_disk(&session)?
    );

    session.flush().await?;
    // Unix: the modes say it is the user's alone. (Windows: an owner-only DACL, see `TokenFile`.)
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(session.file().unwrap().path())?
            .permissions()
            .mode()
            & 0o777;
        let dir_mode = std::fs::metadata(
            session
                .file()
                .unwrap()
                .path()
                .parent()
                .ok_or("no directory")?,
        )?
        .permissions()
        .mode()
            & 0o777;
        check(mode == 0o600, "the session file is not 0600")?;
        println!(
            "\nsession file {} (mode {mode:o}, directory mode {dir_mode:o}); {:?}",
            session.file().unwrap().path().display(),
            session.stats()
        );
    }
    #[cfg(not(unix))]
    println!(
        "\nsession file {}; {:?}",
        session.file().unwrap().path().display(),
        session.stats()
    );

    let _ = stop.send(());
    agent.await??;
    println!("demo finished");
    Ok(())
}

fn step(title: &str) {
    println!("{title}");
}

fn check(condition: bool, what: &str) -> Result<(), Failure> {
    if condition { Ok(()) } else { Err(what.into()) }
}

/// Makes a status call that must fail with a session error, and returns it.
async fn expect_session_failure(client: &mut Client) -> Result<Error, Failure> {
    match client.agent_status(EmptyMessage {}).await {
        Ok(_) => Err("the call succeeded".into()),
        Err(status) => Error::from_status(&status)
            .ok_or_else(|| format!("not a session failure: {status}").into()),
    }
}

/// The re-authentication flow: password -> new token -> `start_with_token` (written to disk).
async fn unlock(client: &mut Client, session: &Session) -> Result<(), Failure> {
    let reply = client
        .session_unlock(PasswordMessage {
            password: PASSWORD.into(),
        })
        .await?
        .into_inner();
    session.start_with_token(Token::new(reply.token)?).await?;
    Ok(())
}

/// A fingerprint of the token on disk, read the way any other process would.
fn on_disk(session: &Session) -> Result<String, Failure> {
    let token = session
        .file()
        .expect("a session file")
        .load()?
        .token
        .ok_or("the session file holds no token")?;
    Ok(fingerprint(&token))
}

/// A short, non-reversible label for a token, so the demo can show it change without showing it.
fn fingerprint(token: &Token) -> String {
    let mut hasher = DefaultHasher::new();
    token.expose().hash(&mut hasher);
    format!("token#{:06x}", hasher.finish() & 0xff_ffff)
}
