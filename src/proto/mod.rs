//! The `agent.v1` gRPC contract for a client: its messages and [`AgentServiceClient`].
//!
//! The contract is the file `proto/agent/v1/agent.proto`, shipped with the crate so that a
//! client or an agent in another language can generate its own code from it. The Rust code here
//! is generated from that file by `tonic-prost-build` (parsed by `protox`, so no `protoc`), and
//! checked in: `tests/agent_codegen.rs` regenerates it and fails on any difference.
//!
//! ```proto
//! service AgentService {
//!   rpc SessionUnlock(PasswordMessage) returns (SessionTokenMessage); // no token needed
//!   rpc SessionsLockAll(EmptyMessage) returns (EmptyMessage);        // ends every session
//!   rpc AgentStatus(EmptyMessage) returns (StatusMessage);           // status = "LIVE"
//!   rpc Echo(EchoMessage) returns (EchoMessage);
//! }
//! ```
//!
//! This module is the contract's one path. The server half, `AgentService` and
//! `AgentServiceServer`, is in the agent's crate, `tower-agent-session-agent` (its module `grpc`),
//! over these same messages: a client's build holds no server.
//!
//! ```no_run
//! use tower_agent_session::proto::{AgentServiceClient, PasswordMessage};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051")
//!     .connect()
//!     .await?;
//! let mut client = AgentServiceClient::new(channel);
//! let unlocked = client
//!     .session_unlock(PasswordMessage { password: "correct horse".into() })
//!     .await?;
//! let token = unlocked.into_inner().token;
//! # let _ = token; Ok(()) }
//! ```

// The generated code, formatted by its generator (so `include!`, which rustfmt leaves alone).
include!("agent.v1.rs");

pub use agent_service_client::AgentServiceClient;

/// The fully qualified service name, `agent.v1.AgentService`.
pub const SERVICE_NAME: &str = "agent.v1.AgentService";
/// The HTTP path of `SessionUnlock`.
pub const SESSION_UNLOCK_PATH: &str = "/agent.v1.AgentService/SessionUnlock";
/// The HTTP path of `SessionsLockAll`.
pub const SESSIONS_LOCK_ALL_PATH: &str = "/agent.v1.AgentService/SessionsLockAll";
/// The HTTP path of `AgentStatus`.
pub const AGENT_STATUS_PATH: &str = "/agent.v1.AgentService/AgentStatus";
/// The HTTP path of `Echo`.
pub const ECHO_PATH: &str = "/agent.v1.AgentService/Echo";
