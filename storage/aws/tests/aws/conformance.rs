//! The storage ports' conformance suite (`storage::conformance`) on the AWS adapters, against
//! the servers `scripts/aws-servers.sh` runs: DynamoDB and SQS on moto, S3 on the real S3 server
//! (MinIO; moto's `ListParts` answer is not S3's, and completing from the listed parts is part of
//! the suite). Each case on resources of its own. What only these adapters do is tested in
//! `adapters.rs` beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use storage::conformance::{AuthHarness, BlobHarness, MetadataHarness, QueueHarness};
use storage_aws::{DynamoAuthStore, DynamoMetadataStore, S3BlobStore, SqsJobQueue};
use test_support::aws;

/// The AWS backends on the test servers; a place is the name (or name prefix) of fresh
/// resources, which every `open` creates when missing.
struct Aws;

impl MetadataHarness for Aws {
    type Store = DynamoMetadataStore;
    type Place = String;

    async fn place(&self) -> String {
        aws::unique("m")
    }

    async fn open(&self, prefix: &String) -> DynamoMetadataStore {
        aws::metadata_store(prefix).await
    }
}

impl AuthHarness for Aws {
    type Store = DynamoAuthStore;
    type Place = String;

    async fn place(&self) -> String {
        aws::unique("a")
    }

    async fn open(&self, prefix: &String) -> DynamoAuthStore {
        aws::auth_store(prefix).await
    }
}

impl QueueHarness for Aws {
    type Store = SqsJobQueue;
    type Place = String;

    async fn place(&self) -> String {
        aws::unique("q")
    }

    async fn open(&self, name: &String) -> SqsJobQueue {
        aws::queue(name, 5).await
    }

    /// SQS counts visibility timeouts and long-poll waits in whole seconds.
    fn tick(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl BlobHarness for Aws {
    type Store = S3BlobStore;
    type Place = String;

    async fn place(&self) -> String {
        aws::unique("b")
    }

    async fn open(&self, bucket: &String) -> S3BlobStore {
        aws::bucket(&aws::real_s3().await, bucket).await
    }
}

storage::metadata_conformance!(Aws);
storage::auth_conformance!(Aws);
storage::queue_conformance!(Aws);
storage::blob_conformance!(Aws);
