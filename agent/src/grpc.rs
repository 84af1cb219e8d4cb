//! The server half of the `agent.v1` gRPC contract: [`AgentService`], the trait an agent
//! implements, and [`AgentServiceServer`], the tonic service that serves it.
//!
//! The messages and [`AgentServiceClient`](tower_agent_session::proto::AgentServiceClient) are the
//! client crate's, in [`tower_agent_session::proto`]: the contract has one path, and the server here
//! takes and returns exactly those types. The code is generated from
//! `proto/agent/v1/agent.proto` (beside the client crate) by `tonic-prost-build`, and checked
//! in: the client crate's `tests/agent_codegen.rs` regenerates it and fails on any difference.
//!
//! [`Agent`](crate::Agent) implements [`AgentService`]; [`Agent::serve`](crate::Agent::serve)
//! serves it behind its [`AuthLayer`](crate::AuthLayer).

// The generated code, formatted by its generator (so `include!`, which rustfmt leaves alone).
include!("grpc/agent.v1.server.rs");

pub use agent_service_server::{AgentService, AgentServiceServer};
