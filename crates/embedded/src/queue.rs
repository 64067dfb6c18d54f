//! An at-least-once queue on SQLite with SQS's semantics: a received message is hidden for a
//! visibility timeout and comes back unless deleted; after `max_receives` receives it moves to
//! the dead-letter queue (`<name>-dlq`), from where `relay dlq redrive` moves it back.

use crate::db::Database;
use async_trait::async_trait;
use relay_core::ports::{InboundQueue, QueueError};
use rusqlite::params;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// SQS's largest message; the embedded queue keeps the same limit so that local mode
/// exercises the splitting the AWS path needs.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub receive_count: u32,
    pub sent_at_ms: i64,
    pub size: usize,
}

#[derive(Clone)]
pub struct SqliteQueue {
    db: Database,
    name: String,
    max_receives: u32,
    notify: Arc<Notify>,
    commits: std::sync::mpsc::Sender<Pending>,
}

/// Bodies waiting for the committer, and who waits for them.
struct Pending {
    bodies: Vec<String>,
    done: tokio::sync::oneshot::Sender<Result<(), QueueError>>,
}

/// Group commit: one thread takes every enqueue waiting at that moment and commits them in one
/// durable transaction (one fsync for many webhooks). While it syncs, the next group gathers.
/// The async callers wait on a channel, not on the disk, so the runtime's workers stay free.
/// Ends when the last handle to the queue is dropped.
fn committer(
    db: Database,
    name: String,
    notify: Arc<Notify>,
    requests: std::sync::mpsc::Receiver<Pending>,
) {
    /// Bounds one transaction (and the wait of its first caller).
    const MAX_GROUP: usize = 512;
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let now = db.clock().now_ms();
        let result = db
            .durably(|tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO queue (queue, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?3)",
                )?;
                for p in &group {
                    for body in &p.bodies {
                        insert.execute(params![name, body, now])?;
                    }
                }
                Ok(())
            })
            .map_err(|e| format!("sqlite: {e}"));
        if result.is_ok() {
            notify.notify_one();
        }
        for p in group {
            let _ = p.done.send(result.clone().map_err(QueueError::Unavailable));
        }
    }
}

fn q_err(e: rusqlite::Error) -> QueueError {
    QueueError::Unavailable(format!("sqlite: {e}"))
}

impl SqliteQueue {
    pub fn new(db: Database, name: &str, max_receives: u32) -> Self {
        let notify = Arc::new(Notify::new());
        let (commits, requests) = std::sync::mpsc::channel();
        {
            let (db, name, notify) = (db.clone(), name.to_owned(), notify.clone());
            std::thread::Builder::new()
                .name(format!("queue-{name}"))
                .spawn(move || committer(db, name, notify, requests))
                .expect("the queue's commit thread starts");
        }
        SqliteQueue {
            db,
            name: name.to_owned(),
            max_receives: max_receives.max(1),
            notify,
            commits,
        }
    }

    pub fn dlq_name(&self) -> String {
        format!("{}-dlq", self.name)
    }

    /// Resolves when something was enqueued since the last call (or at once if it was).
    pub async fn wait_for_messages(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    /// Receives up to `max` visible messages and hides them for `visibility`. Messages
    /// received `max_receives` times before move to the dead-letter queue instead.
    pub fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let now = self.db.clock().now_ms();
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(q_err)?;
        // Both statements walk the index (queue, visible_at_ms, id) in order and stop after a
        // few rows: their cost does not grow with the backlog (it did, when they filtered the
        // whole visible backlog and sorted it by id — found by the 20,000-webhook load run).
        tx.execute(
            "UPDATE queue SET queue = ?2, receipt = NULL
             WHERE id IN (SELECT id FROM queue WHERE queue = ?1 AND visible_at_ms <= ?3
                          ORDER BY visible_at_ms, id LIMIT ?5)
               AND receive_count >= ?4",
            params![
                self.name,
                self.dlq_name(),
                now,
                self.max_receives,
                (max as i64).max(1) * 4
            ],
        )
        .map_err(q_err)?;
        let mut out = Vec::new();
        {
            let mut stmt = tx
                .prepare(
                    "UPDATE queue SET visible_at_ms = ?3, receive_count = receive_count + 1,
                        receipt = lower(hex(randomblob(16)))
                     WHERE id IN (SELECT id FROM queue WHERE queue = ?1 AND visible_at_ms <= ?2
                                    AND receive_count < ?5
                                  ORDER BY visible_at_ms, id LIMIT ?4)
                     RETURNING id, receipt, body, receive_count, sent_at_ms",
                )
                .map_err(q_err)?;
            let rows = stmt
                .query_map(
                    params![
                        self.name,
                        now,
                        now + visibility.as_millis() as i64,
                        max as i64,
                        self.max_receives
                    ],
                    |r| {
                        Ok(ReceivedMessage {
                            message_id: format!("local-{}", r.get::<_, i64>(0)?),
                            receipt: r.get(1)?,
                            body: r.get(2)?,
                            receive_count: r.get(3)?,
                            sent_at_ms: r.get(4)?,
                        })
                    },
                )
                .map_err(q_err)?;
            for row in rows {
                out.push(row.map_err(q_err)?);
            }
        }
        tx.commit().map_err(q_err)?;
        out.sort_by(|a, b| {
            a.sent_at_ms
                .cmp(&b.sent_at_ms)
                .then(a.message_id.cmp(&b.message_id))
        });
        Ok(out)
    }

    /// Deletes a received message. A stale receipt (the message was received again since)
    /// deletes nothing, as on SQS.
    pub fn delete(&self, receipt: &str) -> Result<bool, QueueError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "DELETE FROM queue WHERE queue = ?1 AND receipt = ?2",
                params![self.name, receipt],
            )
            .map_err(q_err)?;
        Ok(n == 1)
    }

    /// Makes a received message visible again after `delay` (SQS ChangeMessageVisibility).
    pub fn retry_after(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE queue SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt = ?2",
            params![
                self.name,
                receipt,
                self.db.clock().now_ms() + delay.as_millis() as i64
            ],
        )
        .map_err(q_err)?;
        Ok(())
    }

    fn count(&self, queue: &str) -> Result<usize, QueueError> {
        let conn = self.db.lock();
        conn.query_row(
            "SELECT count(*) FROM queue WHERE queue = ?1",
            [queue],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as usize)
        .map_err(q_err)
    }

    /// Messages waiting or in flight.
    pub fn depth(&self) -> Result<usize, QueueError> {
        self.count(&self.name)
    }

    /// How long the oldest message has been waiting (zero for an empty queue).
    pub fn oldest_age(&self) -> Result<Duration, QueueError> {
        let oldest: Option<i64> = self
            .db
            .lock()
            .query_row(
                "SELECT min(sent_at_ms) FROM queue WHERE queue = ?1",
                params![self.name],
                |r| r.get(0),
            )
            .map_err(q_err)?;
        let now = self.db.clock().now_ms();
        Ok(oldest.map_or(Duration::ZERO, |t| {
            Duration::from_millis((now - t).max(0) as u64)
        }))
    }

    pub fn dlq_depth(&self) -> Result<usize, QueueError> {
        self.count(&self.dlq_name())
    }

    pub fn dlq_list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare("SELECT id, receive_count, sent_at_ms, length(body) FROM queue WHERE queue = ?1 ORDER BY id LIMIT ?2")
            .map_err(q_err)?;
        let rows = stmt
            .query_map(params![self.dlq_name(), limit as i64], |r| {
                Ok(DeadLetter {
                    message_id: format!("local-{}", r.get::<_, i64>(0)?),
                    receive_count: r.get(1)?,
                    sent_at_ms: r.get(2)?,
                    size: r.get::<_, i64>(3)? as usize,
                })
            })
            .map_err(q_err)?;
        rows.map(|r| r.map_err(q_err)).collect()
    }

    /// Moves every dead letter back to the queue with a fresh receive count.
    pub fn dlq_redrive(&self) -> Result<usize, QueueError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "UPDATE queue SET queue = ?1, receive_count = 0, visible_at_ms = ?3, receipt = NULL WHERE queue = ?2",
                params![self.name, self.dlq_name(), self.db.clock().now_ms()],
            )
            .map_err(q_err)?;
        drop(conn);
        if n > 0 {
            self.notify.notify_one();
        }
        Ok(n)
    }
}

#[async_trait]
impl InboundQueue for SqliteQueue {
    fn max_message_bytes(&self) -> usize {
        MAX_MESSAGE_BYTES
    }

    async fn enqueue(&self, bodies: &[String]) -> Result<(), QueueError> {
        if let Some(big) = bodies.iter().find(|b| b.len() > MAX_MESSAGE_BYTES) {
            return Err(QueueError::TooLarge {
                size: big.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        if bodies.is_empty() {
            return Ok(());
        }
        let (done, committed) = tokio::sync::oneshot::channel();
        self.commits
            .send(Pending {
                bodies: bodies.to_vec(),
                done,
            })
            .map_err(|_| QueueError::Unavailable("the queue's commit thread has stopped".into()))?;
        committed
            .await
            .map_err(|_| QueueError::Unavailable("the queue's commit thread has stopped".into()))?
    }
}

#[async_trait]
impl relay_core::ports::OutboundQueue for SqliteQueue {
    async fn enqueue_jobs(&self, jobs: &[relay_core::jobs::Job]) -> Result<(), QueueError> {
        let bodies: Vec<String> = jobs.iter().map(relay_core::jobs::Job::to_body).collect();
        self.enqueue(&bodies).await
    }
}

#[async_trait]
impl relay_core::ports::JobControl for SqliteQueue {
    async fn retry_after(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        SqliteQueue::retry_after(self, receipt, delay)
    }

    async fn dead_letter(&self, body: &str) -> Result<(), QueueError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT INTO queue (queue, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?3)",
            params![self.dlq_name(), body, self.db.clock().now_ms()],
        )
        .map_err(q_err)?;
        Ok(())
    }
}
