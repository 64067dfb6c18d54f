//! [`OutboundLedger`] on SqliteMessageStore: replies and their sending.

use super::*;

#[async_trait]
impl OutboundLedger for SqliteMessageStore {
    async fn clear_unread(&self, tenant: &TenantId, contact: &ContactId) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE contacts SET unread = 0 WHERE tenant = ?1 AND contact_id = ?2",
            params![tenant.as_str(), contact.as_str()],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn set_send_backoff(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        until: i64,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE contacts SET send_backoff_until = max(send_backoff_until, ?3) WHERE tenant = ?1 AND contact_id = ?2",
            params![tenant.as_str(), contact.as_str(), until],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        if let Some(idem) = idempotency {
            let existing: Option<(String, String)> = tx
                .query_row(
                    "SELECT message_key, request_hash FROM idempotency WHERE tenant = ?1 AND key_hash = ?2 AND expires_at > ?3",
                    params![tenant.as_str(), idem.key_hash, message.received_at],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            if let Some((message_key, request_hash)) = existing {
                return Ok(CreateOutcome::Existing {
                    message_key,
                    request_hash: Some(request_hash),
                });
            }
            tx.execute(
                "INSERT OR REPLACE INTO idempotency (tenant, key_hash, message_key, request_hash, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![tenant.as_str(), idem.key_hash, message.wamid_key, idem.request_hash, message.expires_at],
            )
            .map_err(db_err)?;
        }
        let n = tx
            .execute(
                "INSERT INTO messages (tenant, wamid_key, contact_id, timestamp, status_rank, body, expires_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    tenant.as_str(),
                    message.wamid_key,
                    message.contact_id.as_str(),
                    message.timestamp,
                    to_json(message),
                    message.expires_at
                ],
            )
            .map_err(db_err)?;
        if n == 0 {
            return Ok(CreateOutcome::Existing {
                message_key: message.wamid_key.clone(),
                request_hash: None,
            });
        }
        tx.execute(
            "UPDATE contacts SET last_message_at = max(last_message_at, ?3) WHERE tenant = ?1 AND contact_id = ?2",
            params![tenant.as_str(), message.contact_id.as_str(), message.timestamp],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(CreateOutcome::Created)
    }

    async fn claim_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<Claim, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let row: Option<(i64, i64, i64)> = tx
            .query_row(
                "SELECT coalesce(status_rank, 0), send_lease_until, attempts FROM messages
                 WHERE tenant = ?1 AND wamid_key = ?2 AND expires_at > ?3",
                params![tenant.as_str(), message_key, now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err)?;
        let claim = match row {
            None => Claim::Missing,
            Some((rank, _, _)) if rank > 0 => Claim::Done,
            Some((_, lease, _)) if lease > now => Claim::InFlight,
            Some((_, _, attempts)) => {
                tx.execute(
                    "UPDATE messages SET send_lease_until = ?3, attempts = attempts + 1 WHERE tenant = ?1 AND wamid_key = ?2",
                    params![tenant.as_str(), message_key, now + lease_secs],
                )
                .map_err(db_err)?;
                Claim::Claimed {
                    attempt: attempts as u32 + 1,
                }
            }
        };
        tx.commit().map_err(db_err)?;
        Ok(claim)
    }

    async fn complete_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        _contact: &ContactId,
        wamid: &str,
        wamid_key: &str,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE messages SET alias_key = ?3, send_lease_until = 0,
                body = json_set(body, '$.wamid', ?4, '$.status',
                    CASE WHEN coalesce(status_rank, 0) < 1 THEN 'sent' ELSE json_extract(body, '$.status') END),
                status_rank = max(coalesce(status_rank, 0), 1)
             WHERE tenant = ?1 AND wamid_key = ?2",
            params![tenant.as_str(), message_key, wamid_key, wamid],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn fail_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        error: &ApiError,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE messages SET status_rank = ?3, send_lease_until = 0,
                body = json_set(body, '$.status', 'failed', '$.error', json(?4))
             WHERE tenant = ?1 AND wamid_key = ?2",
            params![
                tenant.as_str(),
                message_key,
                DeliveryStatus::Failed.rank(),
                to_json(error)
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn release_send(&self, tenant: &TenantId, message_key: &str) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE messages SET send_lease_until = 0 WHERE tenant = ?1 AND wamid_key = ?2",
            params![tenant.as_str(), message_key],
        )
        .map_err(db_err)?;
        Ok(())
    }
}
