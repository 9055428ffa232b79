//! Shared building blocks of LFUSYS: the upload plan and state machine, the sessions gRPC
//! contract, token signing and verification, problem+json errors, HTTP header parsing,
//! telemetry and the storage ports with their embedded implementations.

pub mod clock;
pub mod digest;
pub mod ids;
pub mod jobs;
pub mod observability;
pub mod plan;
pub mod problem;
pub mod proto;
pub mod range;
pub mod sessions_client;
pub mod state;
pub mod storage;
pub mod tokens;
pub mod units;
