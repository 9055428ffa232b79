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

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;

use super::{StoreError, StoreResult};

pub use dynamodb::{DynamoAuthStore, DynamoMetadataStore, TableNames};
pub use s3::S3BlobStore;
pub use sqs::SqsJobQueue;

/// Region used when none is configured (S3-compatible test servers do not care).
pub const FALLBACK_REGION: &str = "us-east-1";

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

/// The SDK's standard configuration loader with an HTTP client on rustls + ring.
fn sdk_loader() -> aws_config::ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
}

/// Loads the SDK's standard configuration (region, endpoints, credentials, retries) with an
/// HTTP client on rustls + ring.
pub async fn load_sdk_config() -> SdkConfig {
    let config = sdk_loader().load().await;
    if config.region().is_some() {
        return config;
    }
    load_sdk_config_in(FALLBACK_REGION).await
}

/// The standard configuration in a region the caller knows: the SDK's region chain, whose last
/// resort is the instance metadata service, is not consulted.
pub async fn load_sdk_config_in(region: &str) -> SdkConfig {
    sdk_loader()
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await
}

/// An SDK configuration for an explicit endpoint and static credentials (tests, benchmarks
/// against S3-compatible servers).
pub async fn sdk_config_for(endpoint: &str, access_key: &str, secret_key: &str) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let credentials =
        aws_sdk_s3::config::Credentials::new(access_key, secret_key, None, None, "lfusys-static");
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(aws_config::Region::new(FALLBACK_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

/// A shared SDK configuration: loaded once per process, on first use.
pub async fn shared_sdk_config() -> SdkConfig {
    static CONFIG: tokio::sync::OnceCell<SdkConfig> = tokio::sync::OnceCell::const_new();
    CONFIG.get_or_init(load_sdk_config).await.clone()
}

/// Creates what is missing of the bucket, the tables and the queues (development and tests;
/// production creates them with its infrastructure tooling). Idempotent.
pub async fn create_resources(sdk: &SdkConfig, resources: &AwsResources) -> StoreResult<()> {
    s3::create_bucket(sdk, &resources.bucket).await?;
    dynamodb::create_tables(sdk, &TableNames::new(&resources.table_prefix)).await?;
    sqs::create_queues(sdk, &resources.queue_name, resources.max_receives).await?;
    Ok(())
}

/// What an SDK failure means for a caller of the storage ports.
pub(crate) fn sdk_error<E>(what: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = format!("{what}: {}", DisplayErrorContext(err));
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or_default();
            if is_credentials_code(code) {
                StoreError::Unavailable(format!(
                    "{what}: the AWS credentials were rejected ({code}); check AWS_ACCESS_KEY_ID / AWS_PROFILE / the pod's role: {}",
                    err.message().unwrap_or_default()
                ))
            } else if status >= 500 || is_throttling_code(code) {
                StoreError::Unavailable(detail)
            } else {
                StoreError::Other(detail)
            }
        }
        // Timeouts, refused connections, missing credentials or region: transient or
        // fixable by configuration, never the caller's fault.
        _ => StoreError::Unavailable(detail),
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
            return Err(StoreError::Unavailable(format!(
                "{what} did not become ready within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
