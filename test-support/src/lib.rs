//! Helpers shared by the test suites of several crates (a dev-dependency only).
//!
//! - [`aws`]: the servers `scripts/aws-servers.sh` runs (moto for S3, DynamoDB and SQS, MinIO
//!   for S3), stores of `storage-aws` on fresh resources there, and a loopback fault proxy.

pub mod aws;
