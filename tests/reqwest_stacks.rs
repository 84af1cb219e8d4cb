//! reqwest the way its users compose it, over loopback against the crate's HTTP agent: the
//! `SessionMiddleware` on a reqwest-middleware client, and `ReauthService<reqwest::Client>`
//! from the layer. Each starting state of a session (no token, a valid one, one the agent
//! stopped accepting), the refresh on disk, the token's header hidden, and re-authentication:
//! the replay of a body, a failure after it, a body that cannot be replayed, a failed unlock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tower_agent_session::store::TokenStore as _;

use http::Extensions;
use http::header::AUTHORIZATION;
use reqwest_middleware::ClientBuilder;
use tower::{Layer as _, Service, ServiceExt as _};
use tower_agent_session::{BoxError, Error, SessionLayer, SessionMiddleware, Token};
use tower_agent_session_agent::{HTTP_ECHO_PATH, HTTP_STATUS_PATH, SessionManager};

mod common;
mod reqwest_support;
use common::{assert_file_token_accepted, quiet_session};
use reqwest_support::{Answered, HttpAgent, KINDS, Mark, Seen, Stack};

async fn text(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_middleware_without_reauthentication_hands_over_each_starting_state() {
    let agent = HttpAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session.start().await.unwrap();
    let seen = Seen::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SessionMiddleware::new(session.clone()))
        .with(seen.clone())
        .build();

    // No token: sent without one, refused, handed over.
    let response = client.execute(agent.status()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenNotProvided)
    ));

    // A valid token: sent hidden, refreshed, the refresh on disk, the response's token hidden.
    let token = agent.manager.mint().unwrap();
    session.start_with_token(token.clone()).await.unwrap();
    let response = client.execute(agent.status()).await.unwrap();
    assert_eq!(response.status(), 200);
    let refreshed = response.headers().get(AUTHORIZATION).unwrap();
    assert!(refreshed.is_sensitive(), "the response's token is hidden");
    assert_eq!(text(response).await, "LIVE");
    assert_ne!(session.token(), Some(token.clone()), "refreshed");
    assert_ne!(session.file().unwrap().load().unwrap().token, Some(token));
    assert_file_token_accepted(&agent.manager, &session);

    // A token the agent no longer accepts: refused, handed over.
    agent.manager.lock_all().unwrap();
    let response = client.execute(agent.status()).await.unwrap();
    assert!(matches!(
        Error::from_response(&response),
        Some(Error::TokenInvalid)
    ));
    assert_eq!(
        seen.sendings(),
        [(None, false), (Some(true), false), (Some(true), false)],
        "one sending each, the token sensitive"
    );
}

#[tokio::test]
async fn no_token_unlocks_and_replays() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = quiet_session(dir.path());
        session.start().await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut client = Stack::new(kind, &session, agent.unlock(&runs));
        let response = client.send(agent.status()).await.unwrap();
        assert_eq!(response.status(), 200, "{kind:?}");
        assert_eq!(text(response).await, "LIVE", "{kind:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{kind:?}");
        assert_eq!(
            agent.received(HTTP_STATUS_PATH),
            2,
            "{kind:?}: sent, replayed"
        );
        assert_file_token_accepted(&agent.manager, &session);
    }
}

#[tokio::test]
async fn a_valid_token_is_sent_hidden_and_its_refresh_written() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = quiet_session(dir.path());
        let token = agent.manager.mint().unwrap();
        session.start_with_token(token.clone()).await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut client = Stack::new(kind, &session, agent.unlock(&runs));
        let response = client.send(agent.status()).await.unwrap();
        assert_eq!(response.status(), 200, "{kind:?}");
        let refreshed = response.headers().get(AUTHORIZATION).unwrap();
        assert!(
            refreshed.is_sensitive(),
            "{kind:?}: the response's token is hidden"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{kind:?}: no unlock");
        assert_eq!(agent.received(HTTP_STATUS_PATH), 1, "{kind:?}");
        assert_ne!(session.token(), Some(token.clone()), "{kind:?}: refreshed");
        let on_disk = session.file().unwrap().load().unwrap().token;
        assert_eq!(on_disk, session.token(), "{kind:?}: the refresh on disk");
        assert_file_token_accepted(&agent.manager, &session);
    }
}

#[tokio::test]
async fn the_token_goes_out_sensitive_on_both_stacks() {
    let agent = HttpAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let session = quiet_session(dir.path());
    session
        .start_with_token(agent.manager.mint().unwrap())
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));

    let seen = Seen::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SessionMiddleware::new(session.clone()).reauthenticate_with(agent.unlock(&runs)))
        .with(seen.clone())
        .build();
    client.execute(agent.status()).await.unwrap();
    assert_eq!(seen.sendings(), [(Some(true), false)]);

    // The layer over a service that looks at what reaches reqwest.
    let sensitive = Arc::new(Mutex::new(Vec::new()));
    let (looked, http) = (sensitive.clone(), reqwest::Client::new());
    let inspecting = tower::service_fn(move |request: reqwest::Request| {
        let header = request.headers().get(AUTHORIZATION);
        looked
            .lock()
            .unwrap()
            .push(header.map(http::HeaderValue::is_sensitive));
        http.execute(request)
    });
    let mut service = SessionLayer::new(session.clone())
        .reauthenticate_with(agent.unlock(&runs))
        .layer(inspecting);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(agent.status())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(*sensitive.lock().unwrap(), [Some(true)]);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_invalid_token_after_lock_all_unlocks_and_replays_a_post_with_its_body() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = agent.stale_session(dir.path()).await;
        let stale = session.token();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut client = Stack::new(kind, &session, agent.unlock(&runs));
        let response = client.send(agent.echo("replayed")).await.unwrap();
        assert_eq!(response.status(), 200, "{kind:?}");
        assert_eq!(
            text(response).await,
            "replayed",
            "{kind:?}: the body sent again"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{kind:?}");
        assert_eq!(
            agent.received(HTTP_ECHO_PATH),
            2,
            "{kind:?}: sent, replayed"
        );
        assert_ne!(
            session.file().unwrap().load().unwrap().token,
            stale,
            "{kind:?}"
        );
        assert_file_token_accepted(&agent.manager, &session);
    }
}

#[tokio::test]
async fn the_middleware_lends_the_extensions_to_both_sendings_and_gives_them_back() {
    let agent = HttpAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let session = agent.stale_session(dir.path()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = Seen::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(SessionMiddleware::new(session.clone()).reauthenticate_with(agent.unlock(&runs)))
        .with(seen.clone())
        .build();
    let mut extensions = Extensions::new();
    extensions.insert(Mark("caller"));
    let response = client
        .execute_with_extensions(agent.echo("marked"), &mut extensions)
        .await
        .unwrap();
    assert_eq!(text(response).await, "marked");
    assert_eq!(
        seen.sendings(),
        [(Some(true), true), (Some(true), true)],
        "the refused sending and the replay, each with the token and the caller's mark"
    );
    assert_eq!(
        extensions.get::<Answered>().map(|a| a.0),
        Some(2),
        "what the chain left in the extensions reaches the caller"
    );
}

#[tokio::test]
async fn a_failure_after_the_replay_is_handed_over() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = agent.stale_session(dir.path()).await;
        // A re-authenticator whose tokens this agent does not accept.
        let foreign = SessionManager::new().unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let bad = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(foreign.mint().map_err(BoxError::from))
        };
        let mut client = Stack::new(kind, &session, bad);
        let response = client.send(agent.echo("twice")).await.unwrap();
        assert_eq!(response.status(), 401, "{kind:?}");
        assert!(
            matches!(Error::from_response(&response), Some(Error::TokenInvalid)),
            "{kind:?}"
        );
        // Recovered twice (a replay that fails again may have met a lock all), then handed
        // over: three sendings, no loop.
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{kind:?}: two recoveries");
        assert_eq!(
            agent.received(HTTP_ECHO_PATH),
            3,
            "{kind:?}: two replays, no loop"
        );
    }
}

#[tokio::test]
async fn a_streaming_body_is_sent_once_and_its_failure_handed_over() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = agent.stale_session(dir.path()).await;
        let runs = Arc::new(AtomicUsize::new(0));
        let mut client = Stack::new(kind, &session, agent.unlock(&runs));
        let streaming = reqwest::Body::wrap(http_body_util::Full::new(bytes::Bytes::from_static(
            b"streamed",
        )));
        assert!(streaming.as_bytes().is_none(), "a body reqwest cannot copy");
        let response = client.send(agent.echo(streaming)).await.unwrap();
        assert_eq!(response.status(), 401, "{kind:?}: the first failure");
        assert!(
            matches!(Error::from_response(&response), Some(Error::TokenInvalid)),
            "{kind:?}"
        );
        assert_eq!(agent.received(HTTP_ECHO_PATH), 1, "{kind:?}: not replayed");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "{kind:?}: recovered all the same"
        );

        // The next call goes with the recovered token.
        let response = client.send(agent.echo("next")).await.unwrap();
        assert_eq!(text(response).await, "next", "{kind:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{kind:?}");
    }
}

#[tokio::test]
async fn a_failed_reauthentication_is_the_crates_error() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = agent.stale_session(dir.path()).await;
        let refused = || async { Err::<Token, _>(BoxError::from("no password today")) };
        let mut client = Stack::new(kind, &session, refused);
        let error = client.send(agent.status()).await.unwrap_err();
        let ours = match error.downcast_ref::<reqwest_middleware::Error>() {
            Some(reqwest_middleware::Error::Middleware(error)) => error.downcast_ref::<Error>(),
            Some(other) => panic!("{kind:?}: not the middleware's error: {other}"),
            None => error.downcast_ref::<Error>(),
        };
        assert!(
            matches!(ours, Some(Error::Reauthentication(_))),
            "{kind:?}: {error}"
        );
        assert_eq!(
            agent.received(HTTP_STATUS_PATH),
            1,
            "{kind:?}: not replayed"
        );
    }
}

#[tokio::test]
async fn a_request_with_credentials_of_its_own_passes_through() {
    for kind in KINDS {
        let agent = HttpAgent::start().await;
        let dir = tempfile::tempdir().unwrap();
        let session = agent.stale_session(dir.path()).await;
        let stale = session.token();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut client = Stack::new(kind, &session, agent.unlock(&runs));
        let own = agent.manager.mint().unwrap();
        let mut request = agent.status();
        request
            .headers_mut()
            .insert(AUTHORIZATION, own.header_value());
        let response = client.send(request).await.unwrap();
        assert_eq!(response.status(), 200, "{kind:?}: its own token went");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{kind:?}");
        assert_eq!(
            session.token(),
            stale,
            "{kind:?}: not the session's refresh"
        );

        // Refused, it is handed over: not the session's to recover.
        agent.manager.lock_all().unwrap();
        let mut request = agent.status();
        request
            .headers_mut()
            .insert(AUTHORIZATION, own.header_value());
        let response = client.send(request).await.unwrap();
        assert_eq!(response.status(), 401, "{kind:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{kind:?}");
        assert_eq!(agent.received(HTTP_STATUS_PATH), 2, "{kind:?}");
    }
}
