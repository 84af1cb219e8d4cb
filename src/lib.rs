//! Keep a client's session with an agent alive, as a tower middleware.
//!
//! An agent hands out a session token when the user unlocks it with a password, refreshes it on
//! every call, and rejects calls per RFC 6750 when it is missing or no longer valid. This crate
//! is the client's half:
//!
//! - [`Session`] holds the current token, in memory (read without a lock on every call) and in a
//!   session file ([`TokenFile`]) shared by every process of the user, written atomically.
//! - [`SessionLayer`] wraps any tower service over `http` types (a tonic `Channel`, a hyper-util
//!   client) or, with the `reqwest` feature, reqwest's: it puts `authorization: Bearer <token>`
//!   on each request, marked sensitive, and keeps the refreshed token each response brings.
//!   With [`SessionLayer::reauthenticate_with`] it also recovers from a session failure and
//!   replays the call. With the `reqwest-middleware` feature, `SessionMiddleware` does the same
//!   on a `reqwest-middleware` client.
//! - [`Error`] types the two session failures, [`Error::TokenNotProvided`] (exit code 77) and
//!   [`Error::TokenInvalid`] (exit code 65), and the file errors; [`Error::from_status`] and
//!   [`Error::from_response`] read them off a rejection.
//! - The other half, minting, checking and revoking tokens and serving the `agent.v1` gRPC
//!   service, is a crate of its own, `tower-agent-session-agent` (in `agent/` beside this crate), so
//!   that a client's build holds neither its crypto nor its server. With the `client` feature,
//!   [`proto`] is the contract's client side, which both crates share.
//!
//! ```no_run
//! use tower_agent_session::{Session, SessionLayer, Token, TokenFile};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::new(TokenFile::in_dir("/home/me/.agent")); // the file …/.agent/token
//! session.start().await?; // the token on disk, if any
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let service = ServiceBuilder::new()
//!     .layer(SessionLayer::new(session.clone()))
//!     .service(channel);
//! // … give `service` to a tonic client; after an unlock with the password:
//! session.start_with_token(Token::new("eyJhbGciOi.e30.c2ln")?).await?;
//! # let _ = service; Ok(()) }
//! ```
//!
//! # The flow
//!
//! A session's life, from the unlock to the recovery from a rejection. Steps 2 and 3 are every
//! call's; step 5 happens only with re-authentication on (without it the rejection is handed
//! to the application, which unlocks as in step 1 and calls again).
//!
//! ```text
//!  application         Session + layer                session file              agent
//!     |                       |                             |                     |
//!     |-- 1. unlock: SessionUnlock(password), on a channel without the layer ---->|
//!     |<-------------------------------------------------------------- token t1 --|
//!     |-- start_with_token -->| t1 in use at once           |                     |
//!     |                       |-- explicit write ---------->| t1                  |
//!     |                       |                             |                     |
//!     |-- 2. call ----------->|-- authorization: Bearer t1 ---------------------->|
//!     |                       |<----- 3. refresh: 200, authorization: Bearer t2 --|
//!     |<---------- response --| t2 in use at once           |                     |
//!     |                       |-- compare-and-swap -------->| t2                  |
//!     |                       |   (as AgentTokens says)     |                     |
//!     |                       |                             |                     | lock all:
//!     |                       |                             |                     | tokens end
//!     |-- call -------------->|-- authorization: Bearer t2 ---------------------->|
//!     |                       |<------ 4. rejection: 401, error="invalid_token" --|
//!     |                       |-- 5. take token.reauth.lock, then read the file again -->|
//!     |                       |   another process's token   | t2, or              |
//!     |                       |   there? use it. Else run   | another's           |
//!     |                       |   the re-authenticator,     |                     |
//!     |                       |   once for all the calls    |                     |
//!     |                       |   (and processes) failing   |                     |
//!     |                       |   together                  |                     |
//!     |                       |-- unlock ---------------------------------------->|
//!     |                       |<-------------------------------------------- t3 --|
//!     |                       |-- explicit write ---------->| t3                  |
//!     |                       |-- replay: authorization: Bearer t3 -------------->|
//!     |<---------- response --|<----------------- 200, authorization: Bearer t4 --|
//! ```
//!
//! Meanwhile another process may write the file (its own unlock or refresh) or remove it (a
//! lock): the session sees the change through its [`Watch`] and uses what the file holds from
//! the next call on; [`Session::changed_since`] waits for that.
//!
//! **One owner decides.** Behind every `Session` is one state machine, the owner, that does no
//! I/O itself: each of the events above (a refresh came back, an unlock or a lock, the watch
//! saw the file change, a call failed with token *t* in epoch *e*, a read or a write of the file
//! finished, the re-authenticator finished) is one step of it, taken in the order the events
//! happened, under one mutex that is never held across I/O. A step says what to do: publish the
//! token calls read (one atomic load per call), start a read or a write (one of each at a time,
//! explicit writes first, then the newest refresh), answer the calls waiting, take or release
//! the re-authentication lock beside the file, have one waiting call run the re-authenticator.
//! The driver does it on blocking threads and feeds the results back as the next events. Each
//! guarantee below follows from that order: a refresh of an older epoch is dropped, a recovery
//! ends only on a token that did not fail, and at most one re-authenticator runs per session
//! file across processes.
//!
//! The same flow, runnable, with a stand-in for the agent (a `service_fn` that takes only the
//! token it gave out last and rotates it on every call) and a [`MemoryStore`](crate::store::MemoryStore) for the file:
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::{Arc, Mutex};
//!
//! use tower_agent_session::{store::MemoryStore, Session, SessionLayer, Token};
//! use http::{Request, Response, StatusCode};
//! use tonic::body::Body;
//! use tower::{Layer as _, Service as _, ServiceExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_agent_session::BoxError> {
//! // The agent accepts `t<n>`, answers with `t<n+1>`; `None` after a lock all.
//! let accepted: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(Some(1)));
//! let agent = tower::service_fn({
//!     let accepted = accepted.clone();
//!     move |request: Request<Body>| {
//!         let accepted = accepted.clone();
//!         async move {
//!             let mut accepted = accepted.lock().unwrap();
//!             let sent = request.headers().get("authorization");
//!             let mut response = Response::new(Body::empty());
//!             match *accepted {
//!                 Some(n) if sent.is_some_and(|v| *v == format!("Bearer t{n}")) => {
//!                     *accepted = Some(n + 1);
//!                     let refresh = format!("Bearer t{}", n + 1).parse().unwrap();
//!                     response.headers_mut().insert("authorization", refresh);
//!                 }
//!                 _ => {
//!                     *response.status_mut() = StatusCode::UNAUTHORIZED;
//!                     let challenge = r#"Bearer realm="agent", error="invalid_token""#.parse();
//!                     response.headers_mut().insert("www-authenticate", challenge.unwrap());
//!                 }
//!             }
//!             Ok::<_, Infallible>(response)
//!         }
//!     }
//! });
//! // What a re-authenticator does: ask for the password, call the agent's unlock.
//! let unlocks = Arc::new(AtomicUsize::new(0));
//! let unlock = {
//!     let (accepted, unlocks) = (accepted.clone(), unlocks.clone());
//!     move || {
//!         let (accepted, unlocks) = (accepted.clone(), unlocks.clone());
//!         async move {
//!             unlocks.fetch_add(1, Ordering::Relaxed);
//!             *accepted.lock().unwrap() = Some(10);
//!             Token::new("t10")
//!         }
//!     }
//! };
//!
//! // 1. Unlocked: the session starts with the agent's token.
//! let store = MemoryStore::new(); // in real use, `TokenFile::in_dir(dir)`
//! let session = Session::new(store.clone());
//! session.start_with_token(Token::new("t1")?).await?;
//! let mut service = SessionLayer::new(session.clone())
//!     .reauthenticate_with(unlock)
//!     .layer(agent);
//! let call = || Request::post("http://agent.test/agent.v1.AgentService/AgentStatus");
//!
//! // 2. A call goes with `Bearer t1`; 3. its response refreshes the session to t2.
//! let response = service.ready().await?.call(call().body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(session.token(), Some(Token::new("t2")?));
//!
//! // 4. The agent ends every session; 5. the next call is refused, recovered and replayed.
//! *accepted.lock().unwrap() = None;
//! let response = service.ready().await?.call(call().body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(unlocks.load(Ordering::Relaxed), 1);
//! assert_eq!(session.token(), Some(Token::new("t11")?));
//! session.flush().await?; // refreshes are written behind: wait for them
//! assert_eq!(store.token(), Some(Token::new("t11")?));
//! # Ok(()) }
//! ```
//!
//! # Where the token lives
//!
//! - The session file: [`TokenFile`] says its protocol (lock file, atomic replace, modes, what
//!   a crash leaves), which any other implementation sharing the file must follow.
//! - Which refreshed tokens are written, and whether a call waits for the write: the table on
//!   [`AgentTokens`].
//! - How another process's change reaches a running session: [`Watch`] (a notification from
//!   the OS by default, polling for network filesystems).
//! - Somewhere else: the OS keyring with `KeyringStore` (feature `keyring`), shared by
//!   processes as the file is; a store of your own ([`TokenStore`](crate::store::TokenStore):
//!   a secrets manager); or the token in memory with [`MemoryStore`](crate::store::MemoryStore).
//!
//! # Exit codes
//!
//! [`Error::exit_code`] gives each error a code after BSD's `sysexits.h`, so that a command-line
//! client exits with the same code for the same failure. The example client
//! (`examples/client.rs`, `client --help`) uses the rest of the table for its own failures.
//!
//! | code | `sysexits.h` | [`Error`] | also, in the example client |
//! |---|---|---|---|
//! | 0 | | | success |
//! | 64 | `EX_USAGE` | | a usage error; no password given |
//! | 65 | `EX_DATAERR` | [`TokenInvalid`](Error::TokenInvalid), [`MalformedToken`](Error::MalformedToken), [`CorruptFile`](Error::CorruptFile), [`CorruptEntry`](Error::CorruptEntry) (feature `keyring`) | |
//! | 66 | `EX_NOINPUT` | | the password file cannot be read |
//! | 69 | `EX_UNAVAILABLE` | | the agent cannot be reached |
//! | 70 | `EX_SOFTWARE` | | the agent failed the call in another way |
//! | 73 | `EX_CANTCREAT` | [`WriteFile`](Error::WriteFile) when the file or its directory cannot be created (read-only filesystem, disk full, …) | |
//! | 74 | `EX_IOERR` | [`ReadFile`](Error::ReadFile), [`WriteFile`](Error::WriteFile) (other I/O errors), [`Store`](Error::Store) | the terminal cannot be read |
//! | 75 | `EX_TEMPFAIL` | [`Locked`](Error::Locked), [`KeyringTimedOut`](Error::KeyringTimedOut) (feature `keyring`): try again later | |
//! | 77 | `EX_NOPERM` | [`TokenNotProvided`](Error::TokenNotProvided), [`Reauthentication`](Error::Reauthentication), [`ReadFile`](Error::ReadFile) or [`WriteFile`](Error::WriteFile) with permission denied | the agent refused the password |
//! | 78 | `EX_CONFIG` | [`KeyringUnavailable`](Error::KeyringUnavailable) (feature `keyring`): no keyring to use; start one, or use the session file | |
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tonic` | yes | [`Error::from_status`], [`Error::from_status_with`], [`Session::authorize`], `From<Error> for tonic::Status`, [`WrapBody`](crate::layer::WrapBody) for tonic's body |
//! | `client` | no | the `agent.v1` contract for a client, generated from `proto/agent/v1/agent.proto`: its messages and `AgentServiceClient`, in [`proto`], the contract's one path; implies `tonic` |
//! | `reqwest` | no | [`SessionRequest`](crate::layer::SessionRequest) and [`SessionResponse`](crate::layer::SessionResponse) for reqwest's types: the layer over `reqwest::Client` |
//! | `reqwest-middleware` | no | `SessionMiddleware`, the session on a `reqwest_middleware::ClientBuilder`; implies `reqwest` |
//! | `keyring` | no | [`KeyringStore`]: the token in the OS credential store ([`KeyringBackend`]: Keychain, Credential Manager, Secret Service, kernel keyring), shared by processes as the session file is |
//!
//! The agent side is no feature of this crate: it is the crate `tower-agent-session-agent`
//! (`SessionManager`, `AuthLayer`, `Agent`, `HttpAgent` and the `agent.v1` server), which
//! depends on this one with `client`.
//!
//! # Tracing
//!
//! The crate logs with [`tracing`](https://docs.rs/tracing) under the target `tower_agent_session`
//! (`RUST_LOG=tower_agent_session=debug`), and never a token or a password.
//!
//! Each call through the layer opens a `DEBUG` span, `session_call`, with the fields `path` (the
//! request's path; for gRPC `/package.Service/Method`), `credentials` (`session`, `password`,
//! or `none or own`: what the request carried, never its value) and `epoch` (the session's epoch
//! the call was sent in). The events of the call's refresh, and of the writer and the blocking
//! work it starts, are inside it. With nothing listening at `DEBUG`, a call makes no span and
//! pays one check of the level. With re-authentication on, a call runs in a `DEBUG` span
//! `session_reauth` (field `path`): its recovery's events, and the `session_call` spans of its
//! sending and its replay, are inside it. The events of [`Session::start`], [`Session::clear`]
//! and the like are in the span of the task that called them, as are the watch's warnings when
//! it starts; its events about other processes' changes are in no span.
//!
//! | level | event | what happened |
//! |---|---|---|
//! | `DEBUG` | `session started` | [`Session::start`] read the store (`token_found`) |
//! | `DEBUG` | `session cleared` | [`Session::clear`] removed the token |
//! | `DEBUG` | `refresh accepted` | a response brought a new token: in use, and on its way to the store |
//! | `TRACE` | `refresh accepted; the file's token lives as long` | in use, not written ([`AgentTokens`]) |
//! | `DEBUG` | `refreshed token dropped: the session changed since the call` | an unlock, a lock or another process's token came in between |
//! | `WARN` | `ignoring a malformed token from the agent` | the response's `authorization` is no bearer token (`reason`); the token stays |
//! | `WARN` | `ignoring a token on a rejected call` | a token on a rejection is no refresh |
//! | `TRACE` | `store written` | a write of the store is over (`elapsed`, `ok`) |
//! | `DEBUG` | `refreshed token written` | a refresh's compare-and-swap replaced the store's token |
//! | `INFO` | `refresh lost to another process; using what the file holds` | the compare-and-swap found another token, or none (`token_found`) |
//! | `WARN` | `refreshed token kept in memory; it is written with a later refresh` | another process held the lock too long ([`SessionStats::lock_timeouts`]) (`error`) |
//! | `WARN` | `cannot write the session file; the token is in use but other processes will not see it (warned of once until writes work again)` | a write failed (`error`, `refresh`); [`Session::flush`] reports it. Once for each kind of failure until a write works, and not for the failure a read just warned of (a keyring gone fails both) |
//! | `DEBUG` | `cannot write the session file` | the same, again, before a write has worked (`error`, `refresh`) |
//! | `INFO` | `the session file can be written again` | a write worked after failing ones |
//! | `WARN` | `the token's write is taking long; answering the call without it` | a call waited [`SessionBuilder::call_wait`]; the write goes on |
//! | `DEBUG` | `password call's token dropped: the session changed since` | see [`SessionBuilder::start_on_password`] |
//! | `ERROR` | `the session's store work stopped before it was done` | a read or write was dropped unfinished (a runtime shutting down, a store that panicked); whoever waited for it is answered with an error |
//! | `ERROR` | `cannot start a thread for the session's file work` | outside Tokio, no thread could be made (`error`); the work is dropped |
//! | `DEBUG` | `could not remove a stale temp file` | a dead writer's temp file stays (`error`) |
//! | `DEBUG` | `the token expires within the renewal margin; renewing it first` | see [`SessionLayer::renew_before_expiry`] |
//! | `INFO` | `waiting for another process to re-authenticate` | a recovery waits for the holder of the re-authentication lock (`pid`) |
//! | `ERROR` | `the try for the re-authentication lock stopped before it ran` | the try was dropped (a runtime shutting down); the recovery goes on without the lock |
//! | `WARN` | `cannot take the re-authentication lock; going on without it` | its file cannot be made or locked (`error`) |
//! | `WARN` | `cannot hold the re-authentication lock; locking all without it` | [`Session::clear_after`] past the lock's bound, or without a lock file (`error`) |
//! | `INFO` | `another process holds a new token; using it` | a recovery found another process's token in the file |
//! | `WARN` | `cannot re-read the session file; re-authenticating` | a recovery could not read the file; it re-authenticates |
//! | `INFO` | `re-authenticating` | the re-authenticator runs, once for the calls failing together |
//! | `DEBUG` | `re-authenticated after the session recovered; token unused` | another token ended the recovery while the re-authenticator ran |
//! | `WARN` | `re-authentication failed` | the calls get [`Error::Reauthentication`] |
//! | `DEBUG` | `the call failed for its session` | a response said the session failed (`error`): the layer recovers, or the caller gets the error |
//! | `DEBUG` | `the session file was held open by another process; done once it let go` | Windows: a write or removal waited for a reader to close the file (`waited`) |
//! | `DEBUG` | `session failure not replayed: the request cannot be sent again` | recovered for the next calls; this one gets its failure |
//! | `INFO` | `session file changed by another process` | the watch picked up a token, or its removal (`token_found`) |
//! | `DEBUG` | `the session file is blank for now; keeping the token` | a shell truncated the file before writing it |
//! | `WARN` | `the session file changed but cannot be used` | the store cannot be read, or holds no token (`error`); the session keeps its own. Warned of once while reads keep failing the same way, and not for the failure a write just warned of |
//! | `DEBUG` | `the session file changed but cannot be used` | the same, again |
//! | `WARN` | `cannot look at the session file` | the watch could not `stat` it (`error`); warned of once while it keeps failing |
//! | `DEBUG` | `cannot look at the session file` | the same, again |
//! | `ERROR` | `the session's store panicked while the watch looked at it` | a store of your own panicked; the watch goes on |
//! | `WARN` | `cannot create the session file's directory` | the watch starts without it (`error`); writes will say why they fail |
//! | `WARN` | `cannot watch the session file; polling it instead` | no notification could be had (`error`); the file is looked at once a second |
//! | `DEBUG` | `cannot watch the session file yet` | the same, again |
//! | `WARN` | `cannot watch the session file; other processes' changes are seen only on a failure` | no watch could start (`error`) |
//! | `WARN` | `the session file's directory was removed or moved; polling it until it is back` | the watch follows the directory |
//! | `WARN` | `cannot watch the session file; other processes' changes are seen only on a failure, until the session's next explicit change` | the watch could not go back to polling (`error`) |
//! | `WARN` | `cannot start a thread to stop the session's watch` | the watcher is left running (`error`) |
//! | `WARN` | `the session's store is not a session file: other processes' changes are seen only on a failure (watch it with Watch::Poll)` | [`Watch::Notify`] with a store that names no file to watch |
//!
//! # Platforms
//!
//! Linux, macOS, the BSDs and Windows: one file protocol ([`TokenFile`]), with what differs
//! (what makes the token owner-only, how a file's version is told, a rename Windows refuses
//! while a reader has the file open) in one module, `file/sys`. The README's "Platforms" table
//! says what is built, linted and run where.
#![deny(missing_docs, unreachable_pub)]
// `unsafe` is allowed in one module only, `file/sys/windows.rs`: Windows' security and
// file-identity calls, which std does not have.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Every Rust snippet of the README, compiled (and, unless marked `no_run`, run) by
/// `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme_doctests {}

// The flow of a token, module by module:
//
//   request ─► layer/mod.rs (attach the token) ─► agent ─► layer/future.rs (hide the response's
//   credentials; response.rs reads it once) ─► session/ (mod.rs: the token calls read, and the
//   explicit changes; from_calls.rs: what calls hand the session; by_hand.rs: what an
//   application calls around calls it makes itself) ─► session/owner.rs (every decision, one
//   `Event` at a time: owner/writes.rs which refreshes are written, one write at a time;
//   owner/reads.rs what a read of the store found; owner/recovery.rs one recovery for all
//   failing calls; owner/reauth_lock.rs who holds the re-authentication lock) ─►
//   session/driver.rs (runs what the owner said: reads, writes, answers, tries for the lock,
//   the log) ─► store.rs / file.rs (the store's contract and the file protocol; file/lock.rs
//   the writers' lock, file/reauth_lock.rs the re-authentication lock; keyring.rs the token in
//   the OS keyring, with a companion file for the version and the locks: keyring/backend.rs the
//   keyring-rs stores, keyring/bounded.rs the keyring's own thread and its bound)
//
//   and back: file ─► session/watch.rs (another process's change) ─► the owner ─► the token
//   calls read.
//
// Re-authentication wraps the session service: layer/recovering.rs (record, check, recover,
// replay; for http and for reqwest), with reauth.rs (the re-authenticator, run for the owner),
// replay.rs (the recorded body), peek.rs (a gRPC failure in the trailers) and failures.rs (how
// an agent says a call failed for its session). bearer.rs reads and writes the wire's
// `authorization` values; token.rs is the token; error.rs the typed errors.
//
// response.rs is the one reading of a response (a refresh, a session started, a session
// failure, or nothing) that layer/future.rs, by_hand.rs's `Session::refresh` and
// layer/recovering.rs act on.

mod bearer;
mod error;
mod failures;
mod file;
#[cfg(feature = "keyring")]
mod keyring;
pub mod layer;
mod message;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod peek;
mod reauth;
mod replay;
mod response;
mod saved;
mod session;
pub mod store;
mod token;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod proto;

pub use error::{CorruptReason, Error};
pub use failures::{Polykey, Rfc6750, SessionFailures};
pub use file::{ReauthLock, TokenFile};
#[cfg(feature = "keyring")]
#[cfg_attr(docsrs, doc(cfg(feature = "keyring")))]
pub use keyring::{KeyringBackend, KeyringStore};
pub use layer::SessionLayer;
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use middleware::SessionMiddleware;
pub use reauth::Reauthenticate;
pub use replay::BoxError;
pub use session::{AgentTokens, Epoch, Session, SessionBuilder, SessionStats, Watch};
pub use token::{MalformedToken, Token};
