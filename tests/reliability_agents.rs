//! Hostile agents: the crate's own agent behind a layer that rewrites its responses, over a
//! real tonic transport, sending refreshed tokens that are huge, have spaces or non-ASCII
//! bytes, use another scheme, or come twice with different values; `www-authenticate` junk;
//! rejections without a challenge. None may be written to disk: the old token stays, in memory
//! and in the file, and the call's result is handed over as the agent sent it.
//!
//! What cannot be tested on the wire, said here once: CR, LF, NUL and DEL cannot be put in an
//! `http::HeaderValue` at all (checked below), and the HTTP/2 decoder builds its values with the
//! same check, so a token with them never reaches the session layer over tonic. The token
//! parser's handling of them is covered in `reliability_props.rs` and the unit tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_agent_session::store::TokenStore as _;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tower::{Service, ServiceBuilder};
use tower_agent_session::proto::{AgentServiceClient, EchoMessage};
use tower_agent_session::{Error, Session, SessionLayer, Token, TokenFile, layer::SessionService};
use tower_agent_session_agent::{Agent, SessionManager};

mod reliability_common;
use reliability_common::PASSWORD;

/// The request header that tells the rewriting layer which case to play.
const CASE_HEADER: &str = "x-hostile-case";

type Rewrite = fn(&mut StatusCode, &mut HeaderMap);

/// What the client must get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The echo, with exactly these `authorization` values in the response metadata.
    Echo(&'static [&'static [u8]]),
    /// `UNAUTHENTICATED`, which `Error::from_status` reads as this session failure.
    Unauthenticated(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NotProvided,
    Invalid,
}

struct Case {
    name: &'static str,
    rewrite: Rewrite,
    /// Whether the agent's body is dropped too, as a proxy's 401 or a trailers-only rejection
    /// has none (tonic believes a body's `grpc-status: 0` over an HTTP 401).
    no_body: bool,
    outcome: Outcome,
}

const HUGE_LEN: usize = "Bearer ".len() + 4 * tower_agent_session::Token::MAX_LEN;

/// `Bearer ` and a token 64 KiB long, four times the longest accepted.
static HUGE: [u8; HUGE_LEN] = {
    let mut bytes = [b'a'; HUGE_LEN];
    let prefix = b"Bearer ";
    let mut i = 0;
    while i < prefix.len() {
        bytes[i] = prefix[i];
        i += 1;
    }
    bytes
};

static HUGE_VALUES: [&[u8]; 1] = [&HUGE];

fn set(headers: &mut HeaderMap, values: &[&[u8]]) {
    headers.remove(header::AUTHORIZATION);
    for value in values {
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).expect("a value http can carry"),
        );
    }
}

fn junk_challenges(headers: &mut HeaderMap) {
    for junk in [
        &b"Bearer error=\"invalid_token"[..],
        b"=,,\" Bearer ,=",
        b"Bearer realm=\"\xff\xfe\"",
        b"Basic",
        b"Bearer error=\"insufficient_scope\", Bearer",
        b"Newauth realm=\"apps\", type=1, title=\"Login\", Bearer error=invalid_token",
        b"",
    ] {
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_bytes(junk).unwrap(),
        );
    }
}

/// Turns the response into a trailers-only `UNAUTHENTICATED` without a challenge.
fn grpc_unauthenticated(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::WWW_AUTHENTICATE);
    headers.insert("grpc-status", HeaderValue::from_static("16"));
    headers.insert("grpc-message", HeaderValue::from_static("go%20away"));
}

macro_rules! values {
    ($($v:expr),* $(,)?) => { &[$($v as &[u8]),*] };
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a 64 KiB token",
            no_body: false,
            rewrite: |_, h| set(h, &HUGE_VALUES),
            outcome: Outcome::Echo(&HUGE_VALUES),
        },
        Case {
            name: "a space inside the token",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer abc def"]),
            outcome: Outcome::Echo(values![b"Bearer abc def"]),
        },
        Case {
            name: "a tab inside the token",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer abc\tdef"]),
            outcome: Outcome::Echo(values![b"Bearer abc\tdef"]),
        },
        Case {
            name: "non-ASCII bytes (obs-text)",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer tok\xe9\x80\xff"]),
            outcome: Outcome::Echo(values![b"Bearer tok\xe9\x80\xff"]),
        },
        Case {
            name: "non-ASCII UTF-8",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer t\xc3\xb6k"]),
            outcome: Outcome::Echo(values![b"Bearer t\xc3\xb6k"]),
        },
        Case {
            name: "another scheme",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Basic dXNlcjpwYXNz"]),
            outcome: Outcome::Echo(values![b"Basic dXNlcjpwYXNz"]),
        },
        Case {
            name: "the scheme alone",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer"]),
            outcome: Outcome::Echo(values![b"Bearer"]),
        },
        Case {
            name: "an empty value",
            no_body: false,
            rewrite: |_, h| set(h, values![b""]),
            outcome: Outcome::Echo(values![b""]),
        },
        Case {
            name: "padding first",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer =abc"]),
            outcome: Outcome::Echo(values![b"Bearer =abc"]),
        },
        Case {
            name: "the header twice with different tokens",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer first.token", b"Bearer second.token"]),
            outcome: Outcome::Echo(values![b"Bearer first.token", b"Bearer second.token"]),
        },
        Case {
            name: "a good token and a bad one",
            no_body: false,
            rewrite: |_, h| set(h, values![b"Bearer first.token", b"Bearer bad token"]),
            outcome: Outcome::Echo(values![b"Bearer first.token", b"Bearer bad token"]),
        },
        Case {
            name: "www-authenticate junk on a success",
            no_body: false,
            rewrite: |_, h| {
                h.remove(header::AUTHORIZATION);
                junk_challenges(h);
            },
            outcome: Outcome::Echo(&[]),
        },
        Case {
            name: "a 401 without a challenge",
            no_body: true,
            rewrite: |status, h| {
                *status = StatusCode::UNAUTHORIZED;
                h.remove(header::AUTHORIZATION);
                h.remove(header::WWW_AUTHENTICATE);
            },
            outcome: Outcome::Unauthenticated(Failure::Invalid),
        },
        Case {
            name: "UNAUTHENTICATED without a challenge",
            no_body: true,
            rewrite: |_, h| grpc_unauthenticated(h),
            outcome: Outcome::Unauthenticated(Failure::Invalid),
        },
        Case {
            name: "UNAUTHENTICATED with www-authenticate junk",
            no_body: true,
            rewrite: |_, h| {
                grpc_unauthenticated(h);
                junk_challenges(h);
            },
            // `Newauth …, Bearer error=invalid_token` is a well-formed invalid_token.
            outcome: Outcome::Unauthenticated(Failure::Invalid),
        },
        Case {
            name: "UNAUTHENTICATED with a bare challenge and a token-shaped junk header",
            no_body: true,
            rewrite: |_, h| {
                grpc_unauthenticated(h);
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"agent\""),
                );
                h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
            },
            outcome: Outcome::Unauthenticated(Failure::NotProvided),
        },
    ]
}

/// Rejections that carry a well-formed token. The agent's own `AuthLayer` never refreshes on a
/// rejection; a client that takes such a token lets a failing agent (or anything between) plant
/// a token in the session file.
fn rejections_with_a_token() -> Vec<Case> {
    vec![
        Case {
            name: "UNAUTHENTICATED carrying a token",
            no_body: true,
            rewrite: |_, h| {
                grpc_unauthenticated(h);
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"agent\", error=\"invalid_token\""),
                );
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer planted.token"),
                );
            },
            outcome: Outcome::Unauthenticated(Failure::Invalid),
        },
        Case {
            name: "a 401 carrying a token",
            no_body: true,
            rewrite: |status, h| {
                *status = StatusCode::UNAUTHORIZED;
                h.remove(header::WWW_AUTHENTICATE);
                h.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_static("Bearer planted.token"),
                );
            },
            outcome: Outcome::Unauthenticated(Failure::Invalid),
        },
    ]
}

/// Every case the hostile agent can play: [`cases`], then [`rejections_with_a_token`].
fn all_cases() -> Vec<Case> {
    let mut all = cases();
    all.extend(rejections_with_a_token());
    all
}

/// Rewrites each response as the case named by the request's [`CASE_HEADER`] says.
#[derive(Clone)]
struct Hostile<S> {
    inner: S,
    cases: Arc<Vec<Case>>,
}

impl<S, ReqB, ResB> Service<http::Request<ReqB>> for Hostile<S>
where
    S: Service<http::Request<ReqB>, Response = http::Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    ReqB: Send + 'static,
    ResB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqB>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let case = request
            .headers()
            .get(CASE_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let cases = self.cases.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if let Some(case) = case {
                let case = &cases[case];
                let (mut parts, mut body) = response.into_parts();
                (case.rewrite)(&mut parts.status, &mut parts.headers);
                if case.no_body {
                    body = ResB::default();
                }
                response = http::Response::from_parts(parts, body);
            }
            Ok(response)
        })
    }
}

#[test]
fn control_characters_cannot_even_be_put_in_a_header() {
    for bad in [
        &b"Bearer a\rb"[..],
        b"Bearer a\nb",
        b"Bearer a\r\nx-injected: 1",
        b"Bearer a\0b",
        b"Bearer a\x7fb",
    ] {
        assert!(HeaderValue::from_bytes(bad).is_err(), "{bad:?}");
    }
}

async fn start_hostile_agent(manager: &SessionManager) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let agent = Agent::new(manager.clone(), PASSWORD);
    let cases = Arc::new(all_cases());
    let hostile = tower::layer::layer_fn(move |inner| Hostile {
        inner,
        cases: cases.clone(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(hostile)
            .layer(agent.auth_layer())
            .add_service(agent.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (address, stop)
}

async fn echo(
    client: &mut AgentServiceClient<SessionService<Channel>>,
    case: Option<usize>,
    challenge: &str,
) -> Result<tonic::Response<EchoMessage>, tonic::Status> {
    let mut request = tonic::Request::new(EchoMessage {
        challenge: challenge.to_owned(),
    });
    if let Some(case) = case {
        request
            .metadata_mut()
            .insert(CASE_HEADER, case.to_string().parse().unwrap());
    }
    client.echo(request).await
}

/// An agent playing the cases, and a client whose session starts from a good token.
struct Fixture {
    manager: SessionManager,
    address: String,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
    file: TokenFile,
    good: Token,
    session: Session,
    client: AgentServiceClient<SessionService<Channel>>,
}

impl Fixture {
    async fn new() -> Self {
        let manager = SessionManager::new().unwrap();
        let (address, stop) = start_hostile_agent(&manager).await;
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::in_dir(dir.path());
        let good = manager.mint().unwrap();
        file.store(&good).unwrap();
        // Every refresh taken would be written, so none can hide behind the JWT `exp` rule.
        let session = Session::builder(tower_agent_session::TokenFile::new(file.path()))
            .watch(tower_agent_session::Watch::Off)
            .agent_tokens(tower_agent_session::AgentTokens::RevokedOnRefresh)
            .build();
        session.start().await.unwrap();
        // HTTP/2 caps a response's header list at 16 KiB by default, which no token over
        // `tower_agent_session::Token::MAX_LEN` fits in; a client that raised the cap lets a huge token reach the
        // layer.
        let roomy = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .http2_max_header_list_size(1 << 20)
            .connect()
            .await
            .unwrap();
        let client = AgentServiceClient::new(
            ServiceBuilder::new()
                .layer(SessionLayer::new(session.clone()))
                .service(roomy),
        );
        Self {
            manager,
            address,
            _stop: stop,
            _dir: dir,
            file,
            good,
            session,
            client,
        }
    }

    /// Plays case `index` and checks its outcome, the token in memory and the file.
    async fn play(&mut self, index: usize, case: &Case) {
        let name = case.name;
        let challenge = format!("case {index}");
        let result = echo(&mut self.client, Some(index), &challenge).await;
        match case.outcome {
            Outcome::Echo(values) => {
                let response = result.unwrap_or_else(|s| panic!("{name}: {s:?}"));
                assert_eq!(response.get_ref().challenge, challenge, "{name}");
                let got: Vec<&[u8]> = response
                    .metadata()
                    .get_all("authorization")
                    .iter()
                    .map(|v| v.as_encoded_bytes())
                    .collect();
                assert_eq!(got, values, "{name}: the headers are handed over as sent");
                for value in response.metadata().get_all("authorization").iter() {
                    assert!(
                        format!("{value:?}").len() < 32,
                        "{name}: a credential shows in Debug"
                    );
                }
            }
            Outcome::Unauthenticated(failure) => {
                let status = result.expect_err(name);
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "{name}");
                let error = Error::from_status(&status);
                let typed = match failure {
                    Failure::Invalid => matches!(error, Some(Error::TokenInvalid)),
                    Failure::NotProvided => matches!(error, Some(Error::TokenNotProvided)),
                };
                assert!(typed, "{name}: {error:?} from {status:?}");
            }
        }
        self.session.flush().await.unwrap();
        let good = Some(self.good.clone());
        assert_eq!(
            self.session.token(),
            good,
            "{name}: the token in use changed"
        );
        assert_eq!(
            self.file.load().unwrap().token,
            good,
            "{name}: a token was written"
        );
        let stats = self.session.stats();
        assert_eq!((stats.refreshes, stats.writes), (0, 0), "{name}: {stats:?}");
    }
}

#[tokio::test]
async fn hostile_agents_never_get_a_token_written_and_results_pass_through() {
    let mut fixture = Fixture::new().await;

    // With the default cap, the transport itself refuses the huge token (case 0): the call
    // fails with the transport's error, and the session is untouched.
    let mut default_client = AgentServiceClient::new(
        ServiceBuilder::new()
            .layer(SessionLayer::new(fixture.session.clone()))
            .service(reliability_common::channel(&fixture.address).await),
    );
    let refused = echo(&mut default_client, Some(0), "too big for h2")
        .await
        .expect_err("h2 refuses a header list over 16 KiB");
    assert!(Error::from_status(&refused).is_none(), "{refused:?}");
    assert_eq!(
        fixture.file.load().unwrap().token,
        Some(fixture.good.clone())
    );
    assert_eq!(fixture.session.token(), Some(fixture.good.clone()));

    let cases = cases();
    for (index, case) in cases.iter().enumerate() {
        fixture.play(index, case).await;
    }

    // The control: an honest response's refresh is taken and written, so the cases above
    // would have shown a write.
    let honest = echo(&mut fixture.client, None, "honest").await.unwrap();
    assert_eq!(honest.get_ref().challenge, "honest");
    fixture.session.flush().await.unwrap();
    let now = fixture.file.load().unwrap().token.unwrap();
    assert_ne!(now, fixture.good);
    fixture.manager.verify(&now).unwrap();
    assert_eq!(fixture.session.stats().writes, 1);
    println!(
        "hostile agents: {} kinds of hostile response over a real transport (and a 64 KiB \
         token refused by HTTP/2's default 16 KiB header cap); none changed the token or wrote \
         the file, each result handed over as sent; an honest refresh after them was written",
        cases.len()
    );
}

#[tokio::test]
async fn a_rejection_carrying_a_token_is_not_taken_as_a_refresh() {
    let mut fixture = Fixture::new().await;
    let offset = cases().len();
    for (index, case) in rejections_with_a_token().iter().enumerate() {
        fixture.play(offset + index, case).await;
    }
}
