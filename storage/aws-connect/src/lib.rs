//! How LFUSYS reaches AWS or an AWS-compatible server: the SDK's standard configuration
//! (`AWS_REGION`, `AWS_ENDPOINT_URL[_S3|_DYNAMODB|_SQS]`, credentials from the environment,
//! profile, web identity or instance metadata, `AWS_MAX_ATTEMPTS`) with an HTTP client on
//! rustls + ring, the region rule, and the names SQS gives FIFO queues.
//!
//! A crate of its own so that the operator, which only reads the queue's depth, links this and
//! the SQS client but none of the storage adapters.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};

/// Region used when none is configured (S3-compatible test servers do not care).
pub const FALLBACK_REGION: &str = "us-east-1";

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
        aws_credential_types::Credentials::new(access_key, secret_key, None, None, "lfusys-static");
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

/// `name` with the `.fifo` suffix SQS requires of FIFO queues.
pub fn fifo_name(name: &str) -> String {
    // SQS names are case-sensitive: only a lowercase `.fifo` makes a FIFO queue.
    #[allow(clippy::case_sensitive_file_extension_comparisons)]
    if name.ends_with(".fifo") {
        name.to_owned()
    } else {
        format!("{name}.fifo")
    }
}

/// The dead-letter queue of the queue `name`.
pub fn dead_letter_name(name: &str) -> String {
    let base = fifo_name(name);
    format!("{}-dlq.fifo", base.trim_end_matches(".fifo"))
}
