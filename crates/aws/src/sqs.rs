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

    /// For a queue configured with a smaller `MaximumMessageSize`.
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
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
