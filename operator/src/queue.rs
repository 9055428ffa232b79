//! Reads the assembly queue's depth from SQS for the autoscaler.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_connect::{fifo_name, load_sdk_config, load_sdk_config_in, FALLBACK_REGION};
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use tokio::sync::Mutex;

/// Static credentials taken from the cluster's credentials Secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Where a cluster's queue is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueLocation {
    pub queue_name: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// `None`: the operator's own identity (IRSA, instance role, environment).
    pub credentials: Option<StaticCredentials>,
}

/// Visible + in-flight messages of a queue.
#[async_trait]
pub trait QueueDepth: Send + Sync {
    /// # Errors
    /// A message that says why the queue could not be read.
    async fn depth(&self, queue: &QueueLocation) -> Result<u64, String>;
}

/// The SQS implementation; keeps one client per location.
#[derive(Default)]
pub struct SqsQueueDepth {
    clients: Mutex<HashMap<QueueLocation, aws_sdk_sqs::Client>>,
}

impl SqsQueueDepth {
    async fn client(&self, queue: &QueueLocation) -> aws_sdk_sqs::Client {
        let mut clients = self.clients.lock().await;
        if let Some(c) = clients.get(queue) {
            return c.clone();
        }
        // A region from the spec: the SDK's region chain (which ends at the instance metadata
        // service) is not asked.
        let sdk = match &queue.region {
            Some(region) => load_sdk_config_in(region).await,
            None => load_sdk_config().await,
        };
        let mut config = aws_sdk_sqs::config::Builder::from(&sdk)
            // A poll is repeated on the next interval: fail fast instead of retrying long.
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(10))
                    .build(),
            );
        if sdk.region().is_none() {
            config = config.region(Region::new(FALLBACK_REGION));
        }
        if let Some(endpoint) = &queue.endpoint {
            config = config.endpoint_url(endpoint);
        }
        if let Some(c) = &queue.credentials {
            config = config.credentials_provider(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "lfusys-cluster-secret",
            ));
        }
        let client = aws_sdk_sqs::Client::from_conf(config.build());
        clients.insert(queue.clone(), client.clone());
        client
    }
}

#[async_trait]
impl QueueDepth for SqsQueueDepth {
    async fn depth(&self, queue: &QueueLocation) -> Result<u64, String> {
        let client = self.client(queue).await;
        let name = fifo_name(&queue.queue_name);
        let describe = |e: &dyn std::fmt::Display| format!("SQS queue {name}: {e}");
        let url = client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| describe(&aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .queue_url
            .ok_or_else(|| describe(&"no queue URL in the answer"))?;
        let attributes = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| describe(&aws_sdk_sqs::error::DisplayErrorContext(e)))?
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| -> Result<u64, String> {
            attributes
                .get(&name)
                .map_or(Ok(0), |v| v.parse::<u64>().map_err(|e| describe(&e)))
        };
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)?
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?)
    }
}
