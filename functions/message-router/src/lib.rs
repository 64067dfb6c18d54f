//! message-router: the SQS batch handler that stores every event of the queued webhooks,
//! exactly once, for the right tenant. Reports partial batch failures, so one bad record
//! never fails its neighbours: a failed record is retried by the queue and, after
//! `maxReceiveCount` receives, lands in the dead-letter queue.
//!
//! The same handler runs on Lambda and in `relay serve` (driven by the embedded queue).

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use relay_core::routing::{RouteError, Router};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Without a message id no single record can be reported, so the whole batch is retried
    /// (every effect is idempotent, so that is safe).
    #[error("an SQS record has no messageId")]
    MissingMessageId,
}

/// Routes every record of the batch; the answer lists the records to retry.
pub async fn handle(router: &Router, event: SqsEvent) -> Result<SqsBatchResponse, BatchError> {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let Some(message_id) = record.message_id.filter(|id| !id.is_empty()) else {
            return Err(BatchError::MissingMessageId);
        };
        let body = record.body.unwrap_or_default();
        let outcome = router.route(&body).await;
        match outcome {
            Ok(report) => tracing::info!(
                message_id = %message_id,
                stored = report.stored,
                duplicates = report.duplicates,
                quarantined = report.quarantined,
                "record routed"
            ),
            Err(e) => {
                match &e {
                    RouteError::Malformed(_) => {
                        tracing::error!(message_id = %message_id, error = %e, "record is malformed; it will reach the DLQ after its retries")
                    }
                    RouteError::Store(_) | RouteError::Queue(_) => {
                        tracing::warn!(message_id = %message_id, error = %e, "record failed; the queue retries it")
                    }
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    Ok(response)
}

impl From<BatchError> for lambda_runtime::Diagnostic {
    fn from(e: BatchError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "MissingMessageId".into(),
            error_message: e.to_string(),
        }
    }
}
