//! `relay dlq`: dead letters listed and redriven, locally or on AWS.

use super::*;

impl DlqCommand {
    pub async fn run(self, clock: Clock) -> anyhow::Result<()> {
        match self {
            DlqCommand::List {
                target,
                dlq_url,
                limit,
                queue,
            } => {
                if target.aws {
                    let (clients, _) = aws_clients_no_table(&target.aws_args).await;
                    let url =
                        dlq_url.context("--dlq-url (or INBOUND_DLQ_URL) is required with --aws")?;
                    let list = relay_aws::admin::dlq_list(&clients.sqs, &url, limit).await?;
                    print_dead(
                        list.iter()
                            .map(|d| (&d.message_id, d.receive_count, d.sent_at_ms, d.size)),
                        &clock,
                    );
                } else {
                    let local = serve::Local::open(&target.data_dir, clock.clone())?;
                    let list = local.queue_named(&queue)?.dlq_list(limit)?;
                    print_dead(
                        list.iter()
                            .map(|d| (&d.message_id, d.receive_count, d.sent_at_ms, d.size)),
                        &clock,
                    );
                }
                Ok(())
            }
            DlqCommand::Redrive {
                target,
                dlq_url,
                queue_url,
                queue: local_queue,
            } => {
                let moved = if target.aws {
                    let (clients, _) = aws_clients_no_table(&target.aws_args).await;
                    let dlq =
                        dlq_url.context("--dlq-url (or INBOUND_DLQ_URL) is required with --aws")?;
                    let queue = queue_url
                        .context("--queue-url (or INBOUND_QUEUE_URL) is required with --aws")?;
                    relay_aws::admin::dlq_redrive(&clients.sqs, &dlq, &queue, |n| {
                        if n % 100 == 0 {
                            eprintln!("  {n} moved…");
                        }
                    })
                    .await?
                } else {
                    let local = serve::Local::open(&target.data_dir, clock.clone())?;
                    let q = local.queue_named(&local_queue)?;
                    if q.dlq_depth()? == 0 {
                        0
                    } else {
                        q.dlq_redrive()?
                    }
                };
                println!("moved {moved} message(s) back to the queue");
                Ok(())
            }
        }
    }
}

pub(crate) fn print_dead<'a>(
    items: impl Iterator<Item = (&'a String, u32, i64, usize)>,
    clock: &Clock,
) {
    let mut any = false;
    for (id, count, sent, size) in items {
        any = true;
        println!(
            "{id}\treceived {count}x\tsent {}\t{size} bytes",
            format_ms(sent, clock)
        );
    }
    if !any {
        println!("the dead-letter queue is empty");
    }
}
