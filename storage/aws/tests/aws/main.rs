//! The AWS adapters' tests against the servers of `scripts/aws-servers.sh` (moto, MinIO): the
//! storage ports' conformance suite and each adapter's own cases. One test binary, so the suite
//! links once.

mod adapters;
mod conformance;
