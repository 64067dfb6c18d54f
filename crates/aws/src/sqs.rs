//! [`InboundQueue`] on SQS.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use relay_core::ports::{InboundQueue, QueueError};

/// SQS's largest message (the queue's `MaximumMessageSize` must be set to it).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug)]
pub struct SqsInboundQueue {
    client: Client,
    url: String,
    max_bytes: usize,
}

impl SqsInboundQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsInboundQueue {
            client,
            url: url.into(),
            max_bytes: SQS_MAX_MESSAGE_BYTES,
        }
    }
}

fn sqs_error<E: aws_sdk_sqs::error::ProvideErrorMetadata, R>(
    op: &str,
    e: &aws_sdk_sqs::error::SdkError<E, R>,
) -> QueueError {
    use aws_sdk_sqs::error::SdkError;
    let what = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service error").to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failure (endpoint unreachable)".to_owned(),
        _ => "SDK error".to_owned(),
    };
    QueueError::Unavailable(format!("{op}: {what}"))
}

#[async_trait]
impl InboundQueue for SqsInboundQueue {
    fn max_message_bytes(&self) -> usize {
        self.max_bytes
    }

    async fn enqueue(&self, bodies: &[String]) -> Result<(), QueueError> {
        // Pieces of a split webhook are each near the size limit, so they go one by one
        // (a batch is limited to 1 MiB in total).
        for body in bodies {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .send()
                .await
                .map_err(|e| sqs_error("SendMessage", &e))?;
        }
        Ok(())
    }
}

/// The outbound (jobs) queue on SQS: enqueue for the router and the inbox API, retry delays
/// and dead letters for reply-sender.
#[derive(Clone, Debug)]
pub struct SqsJobQueue {
    client: Client,
    url: String,
    dlq_url: Option<String>,
}

impl SqsJobQueue {
    pub fn new(client: Client, url: impl Into<String>, dlq_url: Option<String>) -> Self {
        SqsJobQueue {
            client,
            url: url.into(),
            dlq_url,
        }
    }
}

#[async_trait]
impl relay_core::ports::OutboundQueue for SqsJobQueue {
    async fn enqueue_jobs(&self, jobs: &[relay_core::jobs::Job]) -> Result<(), QueueError> {
        // Jobs are small (a reference or one event), so batches of 10 stay far below 1 MiB.
        for chunk in jobs.chunks(10) {
            let mut batch = self.client.send_message_batch().queue_url(&self.url);
            for (i, job) in chunk.iter().enumerate() {
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(job.to_body())
                    .build()
                    .map_err(|_| {
                        QueueError::Unavailable("SendMessageBatch: invalid entry".into())
                    })?;
                batch = batch.entries(entry);
            }
            let out = batch
                .send()
                .await
                .map_err(|e| sqs_error("SendMessageBatch", &e))?;
            if !out.failed().is_empty() {
                let codes: Vec<&str> = out.failed().iter().map(|f| f.code()).collect();
                return Err(QueueError::Unavailable(format!(
                    "SendMessageBatch: {}",
                    codes.join(", ")
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl relay_core::ports::JobControl for SqsJobQueue {
    async fn retry_after(
        &self,
        receipt: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        // SQS caps a message's visibility at 12 hours.
        let secs = delay.as_secs().min(43_200) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| sqs_error("ChangeMessageVisibility", &e))?;
        Ok(())
    }

    async fn dead_letter(&self, body: &str) -> Result<(), QueueError> {
        let dlq = self
            .dlq_url
            .as_deref()
            .ok_or_else(|| QueueError::Unavailable("no OUTBOUND_DLQ_URL configured".into()))?;
        self.client
            .send_message()
            .queue_url(dlq)
            .message_body(body)
            .send()
            .await
            .map_err(|e| sqs_error("SendMessage", &e))?;
        Ok(())
    }
}
