//! message-router: the SQS batch handler that stores every event of the queued webhooks,
//! exactly once, for the right tenant. Reports partial batch failures, so one bad record
//! never fails its neighbours: a failed record is retried by the queue and, after
//! `maxReceiveCount` receives, lands in the dead-letter queue.
//!
//! The same handler runs on Lambda and in `relay serve` (driven by the embedded queue).

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
pub use relay_aws::batch::BatchError;
use relay_aws::batch::{Handled, each_record};
use relay_core::routing::{RouteError, Router};

/// Routes every record of the batch; the answer lists the records to retry.
pub async fn handle(router: &Router, event: SqsEvent) -> Result<SqsBatchResponse, BatchError> {
    each_record(event, |record| async move {
        let message_id = &record.message_id;
        match router.route(&record.body).await {
            Ok(report) => {
                tracing::info!(
                    message_id = %message_id,
                    stored = report.stored,
                    duplicates = report.duplicates,
                    quarantined = report.quarantined,
                    "record routed"
                );
                Handled::Done
            }
            Err(e) => {
                match &e {
                    RouteError::Malformed(_) => {
                        tracing::error!(message_id = %message_id, error = %e, "record is malformed; it will reach the DLQ after its retries")
                    }
                    RouteError::Store(_) | RouteError::Queue(_) => {
                        tracing::warn!(message_id = %message_id, error = %e, "record failed; the queue retries it")
                    }
                }
                Handled::Retry
            }
        }
    })
    .await
}
