//! SQS FIFO job queue.
//!
//! - Messages are sent with message group id = deduplication id = the caller's dedup id (the
//!   upload id): SQS drops a second send within its 5-minute window, and jobs of different
//!   uploads never wait for each other.
//! - `receive` long-polls (up to 20 s per call, repeated up to `wait`) for one message and
//!   hides it for `visibility`; `receive_count` is SQS's `ApproximateReceiveCount`.
//! - `extend_visibility` is `ChangeMessageVisibility` (the assembler's heartbeat).
//! - The queue's redrive policy moves a message received `max_receives` times to the
//!   dead-letter queue `{name}-dlq.fifo`; [`JobQueue::dead_letters`] gives that queue to its
//!   consumer (the sessions service, which marks the upload failed).
//!
//! The queue URL is looked up on first use and cached; a missing queue fails `check()` with a
//! clear message until it exists.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use tokio::sync::OnceCell;

use super::{error_code, sdk_error};
use storage::{JobQueue, QueueDepth, ReceivedJob, StoreError, StoreResult};

/// SQS's longest long poll.
const MAX_WAIT_SECS: u64 = 20;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;

pub use aws_connect::{dead_letter_name, fifo_name};

/// [`JobQueue`] on an SQS FIFO queue.
#[derive(Debug, Clone)]
pub struct SqsJobQueue {
    client: Client,
    name: String,
    url: Arc<OnceCell<String>>,
    /// The dead-letter queue (none for the dead-letter queue itself).
    dead_letter: Option<String>,
}

impl SqsJobQueue {
    /// The queue `name` (made FIFO) and its dead-letter queue.
    pub fn new(sdk: &SdkConfig, name: &str) -> Self {
        Self::with_client(Client::new(sdk), name)
    }

    pub fn with_client(client: Client, name: &str) -> Self {
        Self {
            client,
            name: fifo_name(name),
            url: Arc::new(OnceCell::new()),
            dead_letter: Some(dead_letter_name(name)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The queue's URL (looked up once).
    pub async fn url(&self) -> StoreResult<String> {
        self.url
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_queue_url()
                    .queue_name(&self.name)
                    .send()
                    .await
                    .map_err(|e| {
                        if e.as_service_error()
                            .is_some_and(aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError::is_queue_does_not_exist)
                            || matches!(error_code(&e), Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist"))
                        {
                            StoreError::unavailable(format!(
                                "SQS queue {} does not exist (create it, or start with --create-resources)",
                                self.name
                            ))
                        } else {
                            sdk_error(&format!("SQS GetQueueUrl {}", self.name), e)
                        }
                    })?;
                out.queue_url()
                    .map(str::to_owned)
                    .ok_or_else(|| StoreError::unavailable(format!("SQS gave no URL for {}", self.name)))
            })
            .await
            .cloned()
    }

    async fn receive_once(
        &self,
        wait_secs: u64,
        visibility: Duration,
    ) -> StoreResult<Option<ReceivedJob>> {
        let url = self.url().await?;
        let out = self
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(1)
            .wait_time_seconds(wait_secs.min(MAX_WAIT_SECS) as i32)
            .visibility_timeout(secs_ceil(visibility).min(MAX_VISIBILITY_SECS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_error("SQS ReceiveMessage", e))?;
        let Some(message) = out.messages().first() else {
            return Ok(None);
        };
        let receive_count = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(Some(ReceivedJob {
            body: message.body().unwrap_or_default().to_owned(),
            receipt: message.receipt_handle().unwrap_or_default().to_owned(),
            receive_count,
        }))
    }
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn stale_receipt(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ReceiptHandleIsInvalid"
                | "AWS.SimpleQueueService.MessageNotInflight"
                | "MessageNotInflight"
                | "InvalidParameterValue"
        )
    )
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    async fn send(&self, dedup_id: &str, body: &str) -> StoreResult<()> {
        let url = self.url().await?;
        self.client
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .message_group_id(dedup_id)
            .message_deduplication_id(dedup_id)
            .send()
            .await
            .map_err(|e| sdk_error("SQS SendMessage", e))?;
        Ok(())
    }

    async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Option<ReceivedJob>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(job) = self.receive_once(secs_ceil(left), visibility).await? {
                return Ok(Some(job));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    async fn extend_visibility(&self, receipt: &str, visibility: Duration) -> StoreResult<()> {
        let url = self.url().await?;
        self.client
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(receipt)
            .visibility_timeout(secs_ceil(visibility).min(MAX_VISIBILITY_SECS) as i32)
            .send()
            .await
            .map_err(|e| {
                if stale_receipt(error_code(&e)) {
                    StoreError::NotFound("receipt is stale or unknown".into())
                } else {
                    sdk_error("SQS ChangeMessageVisibility", e)
                }
            })?;
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        let url = self.url().await?;
        self.client
            .delete_message()
            .queue_url(&url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| {
                if stale_receipt(error_code(&e)) {
                    StoreError::NotFound("receipt is stale or unknown".into())
                } else {
                    sdk_error("SQS DeleteMessage", e)
                }
            })?;
        Ok(())
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        let url = self.url().await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sdk_error("SQS GetQueueAttributes", e))?;
        let get = |name: &QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(&QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    async fn check(&self) -> StoreResult<()> {
        self.depth().await.map(|_| ())
    }

    /// A long poll already sent is answered by SQS whether or not anyone still listens.
    fn receives_outlive_their_caller(&self) -> bool {
        true
    }

    fn dead_letters(&self) -> Option<Arc<dyn JobQueue>> {
        let name = self.dead_letter.as_deref()?;
        Some(Arc::new(Self {
            client: self.client.clone(),
            name: name.to_owned(),
            url: Arc::new(OnceCell::new()),
            dead_letter: None,
        }))
    }
}

/// Creates the FIFO queue `name` and its dead-letter queue when missing, and (re)sets the
/// redrive policy: after `max_receives` receives a message moves to the dead-letter queue.
pub async fn create_queues(sdk: &SdkConfig, name: &str, max_receives: u32) -> StoreResult<()> {
    let client = Client::new(sdk);
    let fifo = |n: &str| {
        client
            .create_queue()
            .queue_name(n)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
    };
    let dlq_name = dead_letter_name(name);
    let dlq_url = match fifo(&dlq_name)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
        .send()
        .await
    {
        Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
        Err(e) => return Err(sdk_error(&format!("SQS CreateQueue {dlq_name}"), e)),
    };
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| sdk_error("SQS GetQueueAttributes", e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| StoreError::other(format!("SQS gave no ARN for {dlq_name}")))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives.max(1).to_string(),
    })
    .to_string();
    let main = fifo_name(name);
    let url = match fifo(&main)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
    {
        Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
        // Exists with other attributes: keep it, the redrive policy is set below.
        Err(e) if error_code(&e) == Some("QueueAlreadyExists") => client
            .get_queue_url()
            .queue_name(&main)
            .send()
            .await
            .map_err(|e| sdk_error("SQS GetQueueUrl", e))?
            .queue_url()
            .unwrap_or_default()
            .to_owned(),
        Err(e) => return Err(sdk_error(&format!("SQS CreateQueue {main}"), e)),
    };
    client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(|e| sdk_error("SQS SetQueueAttributes", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(fifo_name("jobs"), "jobs.fifo");
        assert_eq!(fifo_name("jobs.fifo"), "jobs.fifo");
        assert_eq!(dead_letter_name("jobs"), "jobs-dlq.fifo");
        assert_eq!(dead_letter_name("jobs.fifo"), "jobs-dlq.fifo");
        assert_eq!(secs_ceil(Duration::from_millis(1)), 1);
        assert_eq!(secs_ceil(Duration::from_secs(2)), 2);
        assert_eq!(secs_ceil(Duration::ZERO), 0);
    }
}
