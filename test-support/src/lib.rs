//! Helpers shared by the test suites of several crates (a dev-dependency only).
//!
//! - [`wait`]: poll a condition until it holds, failing with what was last seen.
//! - [`net`]: a free loopback port.
//! - [`data`]: deterministic test bytes and files, and their SHA-256.
//! - [`sessions`] (feature `sessions`): a real sessions service on a loopback listener.
//! - [`aws`] (feature `aws`): the servers `scripts/aws-servers.sh` runs (moto for S3, DynamoDB
//!   and SQS, MinIO for S3), stores of `storage-aws` on fresh resources there, and a loopback
//!   fault proxy.

#[cfg(feature = "aws")]
pub mod aws;
pub mod data;
pub mod net;
#[cfg(feature = "sessions")]
pub mod sessions;
pub mod wait;
