//! The LFUSYS domain, free of I/O: the upload plan and state machine, ids, digests, byte
//! ranges, sizes, the clock, assembly jobs, and upload and access tokens. Every other crate
//! builds on it; it knows nothing of gRPC, HTTP, Kubernetes or any storage backend.

pub mod clock;
pub mod digest;
pub mod env;
pub mod ids;
pub mod jobs;
pub mod plan;
pub mod range;
pub mod state;
pub mod tokens;
pub mod units;
