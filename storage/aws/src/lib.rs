//! Production storage on AWS with the official SDK: S3 (blobs), DynamoDB (metadata and auth)
//! and SQS FIFO (the assembly queue). The layout of the tables, the bucket and the queues is
//! described in `docs/aws.md`.
//!
//! Configuration is the SDK's standard one (`AWS_REGION`, `AWS_ENDPOINT_URL` and the
//! per-service `AWS_ENDPOINT_URL_S3` / `_DYNAMODB` / `_SQS`, credentials from the environment,
//! profile, web identity or instance metadata, `AWS_MAX_ATTEMPTS`); S3 uses path-style
//! addressing whenever an endpoint is set, so the same code runs against S3-compatible servers.
//!
//! Opening a store never touches the network: a missing bucket, table or queue, or rejected
//! credentials, show up in `check()` (readiness) with a message that says what to fix, and the
//! store works as soon as the resource appears.

pub mod dynamodb;
pub mod s3;
pub mod sqs;

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;

use storage::{StoreError, StoreResult};

pub use dynamodb::{DynamoAuthStore, DynamoMetadataStore, TableNames};
pub use s3::S3BlobStore;
pub use sqs::SqsJobQueue;

pub use aws_connect::{
    load_sdk_config, load_sdk_config_in, sdk_config_for, shared_sdk_config, FALLBACK_REGION,
};

/// Names of the AWS resources one deployment uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub bucket: String,
    /// Prefix of the DynamoDB table names (`{prefix}uploads`, …).
    pub table_prefix: String,
    /// The FIFO assembly queue (`.fifo` is appended when missing); its dead-letter queue is
    /// `{name}-dlq.fifo`.
    pub queue_name: String,
    /// Receives of one message before SQS moves it to the dead-letter queue.
    pub max_receives: u32,
}

/// Creates what is missing of the bucket, the tables and the queues (development and tests;
/// production creates them with its infrastructure tooling). Idempotent.
pub async fn create_resources(sdk: &SdkConfig, resources: &AwsResources) -> StoreResult<()> {
    s3::create_bucket(sdk, &resources.bucket).await?;
    dynamodb::create_tables(sdk, &TableNames::new(&resources.table_prefix)).await?;
    sqs::create_queues(sdk, &resources.queue_name, resources.max_receives).await?;
    Ok(())
}

/// What an SDK failure means for a caller of the storage ports; the failure itself stays
/// attached as the error's source.
pub(crate) fn sdk_error<E>(what: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = format!("{what}: {}", DisplayErrorContext(&err));
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            if is_credentials_code(code) {
                let message = format!(
                    "{what}: the AWS credentials were rejected ({code}); check AWS_ACCESS_KEY_ID / AWS_PROFILE / the pod's role: {}",
                    err.message().unwrap_or_default()
                );
                StoreError::unavailable_from(message, err)
            } else if status >= 500 || is_throttling_code(code) {
                StoreError::unavailable_from(detail, err)
            } else {
                StoreError::other_from(detail, err)
            }
        }
        // Timeouts, refused connections, missing credentials or region: transient or
        // fixable by configuration, never the caller's fault.
        _ => StoreError::unavailable_from(detail, err),
    }
}

fn is_credentials_code(code: &str) -> bool {
    matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "AccessDenied"
            | "AccessDeniedException"
            | "InvalidSecurity"
            | "MissingAuthenticationToken"
            | "IncompleteSignature"
    )
}

fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "RequestThrottled"
            | "InternalError"
            | "InternalServerError"
            | "ServiceUnavailable"
    )
}

/// The error code of a service error (`None` for transport failures).
pub(crate) fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// Polls `f` until it returns `Some`, up to `timeout` (for resources that become ready).
pub(crate) async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::unavailable(format!(
                "{what} did not become ready within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
