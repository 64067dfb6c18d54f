//! The SQS side of a batch handler, once for message-router and reply-sender: each record in
//! turn, partial batch failures reported by message id (`ReportBatchItemFailures`), so one bad
//! record never fails its neighbours.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use std::collections::HashSet;
use std::future::Future;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Without a message id no single record can be reported, so the whole batch is retried
    /// (every effect is idempotent, so that is safe).
    #[error("an SQS record has no messageId")]
    MissingMessageId,
}

impl From<BatchError> for lambda_runtime::Diagnostic {
    fn from(e: BatchError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "MissingMessageId".into(),
            error_message: e.to_string(),
        }
    }
}

/// One record as a handler sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    pub receipt: Option<String>,
    /// `ApproximateReceiveCount` (1 on the first delivery).
    pub receives: u32,
}

/// Whether the queue should deliver a record again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Done,
    Retry,
}

/// Runs `handle` on every record of `event`, in order; the answer lists the records to retry.
pub async fn each_record<F, Fut>(
    event: SqsEvent,
    mut handle: F,
) -> Result<SqsBatchResponse, BatchError>
where
    F: FnMut(Record) -> Fut,
    Fut: Future<Output = Handled>,
{
    let mut response = SqsBatchResponse::default();
    // Checked before any record is handled: a batch that cannot be reported is retried whole.
    if event
        .records
        .iter()
        .any(|r| r.message_id.as_deref().is_none_or(str::is_empty))
    {
        return Err(BatchError::MissingMessageId);
    }
    for record in event.records {
        let message_id = record.message_id.unwrap_or_default();
        let receives = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        // One span per record (its SQS message id, never its content).
        let span = tracing::info_span!("record", message_id = %message_id, receives);
        let handled = handle(Record {
            message_id: message_id.clone(),
            body: record.body.unwrap_or_default(),
            receipt: record.receipt_handle,
            receives,
        })
        .instrument(span)
        .await;
        if handled == Handled::Retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

/// One message as a queue gave it: what an event source mapping puts in an [`SqsEvent`].
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// `ApproximateReceiveCount`, where the queue reports it.
    pub receives: Option<u32>,
}

/// The event Lambda's SQS event source mapping would deliver for `messages` (for `relay serve`'s
/// embedded queues and the tests' drivers of moto queues: the other side of [`each_record`]).
pub fn event(messages: impl IntoIterator<Item = Received>, source: &str) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in messages {
        let mut record = SqsMessage::default();
        record.message_id = Some(m.message_id);
        record.receipt_handle = Some(m.receipt);
        record.body = Some(m.body);
        if let Some(n) = m.receives {
            record
                .attributes
                .insert("ApproximateReceiveCount".into(), n.to_string());
        }
        record.event_source = Some(source.to_owned());
        event.records.push(record);
    }
    event
}

/// The message ids a handler's answer asks to be delivered again; the rest are deleted.
pub fn failed_ids(response: &SqsBatchResponse) -> HashSet<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}
