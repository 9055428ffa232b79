//! The LFUSYS domain, free of I/O: the upload plan and state machine, ids, digests, byte
//! ranges, sizes, the clock, assembly jobs, upload and access tokens, and the failpoints that
//! tests crash processes at. Every other crate builds on it; it knows nothing of gRPC, HTTP,
//! Kubernetes or any storage backend.

pub mod clock;
pub mod digest;
pub mod env;
pub mod failpoint;
pub mod ids;
pub mod jobs;
pub mod plan;
pub mod range;
pub mod sha256_chain;
pub mod state;
pub mod tokens;
pub mod units;
