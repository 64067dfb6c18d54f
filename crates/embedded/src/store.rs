//! [`MessageStore`] on SQLite: the local twin of the DynamoDB store, with the same
//! idempotency rules (primary keys instead of conditional writes).

use crate::db::Database;
use async_trait::async_trait;
use relay_core::crypto::{CryptoError, KeyStore, WrappedKey};
use relay_core::ids::{ContactId, TenantId};
use relay_core::ports::{AuditLog, MessageStore, StoreError};
use relay_core::records::*;
use relay_core::webhook::{ApiError, DeliveryStatus};
use rusqlite::{OptionalExtension, params};

#[derive(Clone)]
pub struct SqliteMessageStore {
    db: Database,
}

impl SqliteMessageStore {
    pub fn new(db: Database) -> Self {
        SqliteMessageStore { db }
    }

    /// The blob keys of files whose messages have expired (to delete before the rows go).
    pub fn expired_media(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT json_extract(body, '$.media.object_key') FROM messages
                 WHERE expires_at <= ?1 AND json_extract(body, '$.media.object_key') IS NOT NULL
                 UNION ALL
                 SELECT json_extract(body, '$.media.object_key') FROM uploads
                 WHERE expires_at <= ?1 AND json_extract(body, '$.media.object_key') IS NOT NULL",
            )
            .map_err(db_err)?;
        let rows = stmt.query_map([now], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
    }

    /// Deletes expired rows; `relay serve` runs it periodically (DynamoDB's TTL does this on AWS).
    pub fn sweep_expired(&self, now: i64) -> Result<usize, StoreError> {
        let conn = self.db.lock();
        let mut n = 0;
        for table in [
            "messages",
            "statuses",
            "events",
            "identities",
            "contacts",
            "quarantine",
            "consent",
            "idempotency",
            "data_keys",
            "audit",
            "media_failures",
            "uploads",
        ] {
            n += conn
                .execute(
                    &format!("DELETE FROM {table} WHERE expires_at <= ?1"),
                    [now],
                )
                .map_err(db_err)?;
        }
        Ok(n)
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    // SQLite's messages name tables and constraints, never bound values.
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s)
        .map_err(|_| StoreError::Corrupt("a stored row is not valid JSON".into()))
}

fn inserted(n: usize) -> Recorded {
    if n == 1 {
        Recorded::New
    } else {
        Recorded::Duplicate
    }
}

/// The (time, tie-breaker) position a page starts after; the very top without a cursor.
fn keyset(page: &PageRequest) -> Result<(i64, String), StoreError> {
    match &page.cursor {
        None => Ok((i64::MAX, String::new())),
        Some(c) => {
            let p = cursor::decode(c, 2).ok_or(StoreError::InvalidCursor)?;
            let ts = p[0].parse().map_err(|_| StoreError::InvalidCursor)?;
            Ok((ts, p[1].clone()))
        }
    }
}

#[async_trait]
impl MessageStore for SqliteMessageStore {
    async fn resolve_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
        proposed: &ContactId,
        expires_at: i64,
    ) -> Result<ContactId, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let mut found: Option<String> = None;
        for key in identity_keys {
            let c: Option<String> = tx
                .query_row(
                    "SELECT contact_id FROM identities WHERE tenant = ?1 AND identity_key = ?2",
                    params![tenant.as_str(), key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if c.is_some() {
                found = c;
                break;
            }
        }
        let contact = found.unwrap_or_else(|| proposed.as_str().to_owned());
        for key in identity_keys {
            tx.execute(
                "INSERT INTO identities (tenant, identity_key, contact_id, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, identity_key) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                params![tenant.as_str(), key, contact, expires_at],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        ContactId::parse(&contact)
            .map_err(|_| StoreError::Corrupt("identity points at an invalid contact id".into()))
    }

    async fn find_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
    ) -> Result<Option<ContactId>, StoreError> {
        let conn = self.db.lock();
        for key in identity_keys {
            let c: Option<String> = conn
                .query_row(
                    "SELECT contact_id FROM identities WHERE tenant = ?1 AND identity_key = ?2",
                    params![tenant.as_str(), key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if let Some(c) = c {
                return ContactId::parse(&c)
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt("invalid contact id".into()));
            }
        }
        Ok(None)
    }

    async fn record_inbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "INSERT INTO messages (tenant, wamid_key, contact_id, timestamp, status_rank, body, expires_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6) ON CONFLICT DO NOTHING",
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
        let unread = i64::from(n == 1);
        tx.execute(
            "INSERT INTO contacts (tenant, contact_id, name, wa_id, user_id, username, last_inbound_at, last_message_at, unread, expires_at, phone_number_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9, ?10)
             ON CONFLICT (tenant, contact_id) DO UPDATE SET
               name = coalesce(excluded.name, name),
               wa_id = coalesce(excluded.wa_id, wa_id),
               user_id = coalesce(excluded.user_id, user_id),
               username = coalesce(excluded.username, username),
               last_inbound_at = max(coalesce(last_inbound_at, 0), excluded.last_inbound_at),
               last_message_at = max(last_message_at, excluded.last_message_at),
               unread = unread + excluded.unread,
               phone_number_id = excluded.phone_number_id,
               expires_at = max(expires_at, excluded.expires_at)",
            params![
                tenant.as_str(),
                contact.contact_id.as_str(),
                contact.name,
                contact.wa_id,
                contact.user_id,
                contact.username,
                contact.last_inbound_at,
                unread,
                contact.expires_at,
                contact.phone_number_id
            ],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn record_status(
        &self,
        tenant: &TenantId,
        status: &StoredStatus,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "INSERT INTO statuses (tenant, wamid_key, status, timestamp, body, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    tenant.as_str(),
                    status.wamid_key,
                    status.status.as_str(),
                    status.timestamp,
                    to_json(status),
                    status.expires_at
                ],
            )
            .map_err(db_err)?;
        // Monotonic: only a higher rank moves the message on, whatever the arrival order.
        let error = status.errors.first().map(to_json);
        tx.execute(
            "UPDATE messages SET status_rank = ?3,
                body = json_set(body, '$.status', ?4, '$.error', json(coalesce(?5, json_extract(body, '$.error'), 'null')))
             WHERE tenant = ?1 AND (wamid_key = ?2 OR alias_key = ?2) AND (status_rank IS NULL OR status_rank < ?3)",
            params![
                tenant.as_str(),
                status.wamid_key,
                status.status.rank(),
                status.status.as_str(),
                error
            ],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn record_event(
        &self,
        tenant: &TenantId,
        event: &StoredEvent,
    ) -> Result<Recorded, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "INSERT INTO events (tenant, key, kind, body, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![tenant.as_str(), event.key, event.kind, to_json(event), event.expires_at],
            )
            .map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn quarantine(&self, item: &Quarantined) -> Result<Recorded, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "INSERT INTO quarantine (key, received_at, body, expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![item.key, item.received_at, to_json(item), item.expires_at],
            )
            .map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn list_quarantine(
        &self,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare("SELECT body FROM quarantine WHERE expires_at > ?1 ORDER BY received_at DESC, key LIMIT ?2")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![now, limit as i64], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
    }

    async fn list_conversations(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<Conversation>, StoreError> {
        let (after_ts, after_id) = keyset(page)?;
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT contact_id, name, last_message_at, last_inbound_at, unread, opted_out FROM contacts
                 WHERE tenant = ?1 AND expires_at > ?2
                   AND (last_message_at < ?3 OR (last_message_at = ?3 AND contact_id < ?4))
                 ORDER BY last_message_at DESC, contact_id DESC LIMIT ?5",
            )
            .map_err(db_err)?;
        let limit = page.limit.max(1);
        let rows = stmt
            .query_map(
                params![tenant.as_str(), now, after_ts, after_id, (limit + 1) as i64],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, bool>(5)?,
                    ))
                },
            )
            .map_err(db_err)?;
        let mut items = Vec::new();
        for row in rows {
            let (id, name, last_message_at, last_inbound_at, unread, opted_out) =
                row.map_err(db_err)?;
            items.push(Conversation {
                contact_id: ContactId::parse(&id)
                    .map_err(|_| StoreError::Corrupt("invalid contact id".into()))?,
                name,
                last_message_at,
                last_inbound_at,
                unread,
                opted_out,
            });
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|c| cursor::encode(&[&c.last_message_at.to_string(), c.contact_id.as_str()]))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            "SELECT name, last_message_at, last_inbound_at, unread, opted_out FROM contacts
             WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3",
            params![tenant.as_str(), contact.as_str(), now],
            |r| {
                Ok(Conversation {
                    contact_id: contact.clone(),
                    name: r.get(0)?,
                    last_message_at: r.get(1)?,
                    last_inbound_at: r.get(2)?,
                    unread: r.get(3)?,
                    opted_out: r.get(4)?,
                })
            },
        )
        .optional()
        .map_err(db_err)
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<ContactRecord>, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            "SELECT name, last_message_at, last_inbound_at, unread, opted_out, wa_id, user_id, username,
                    phone_number_id, send_backoff_until
             FROM contacts WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3",
            params![tenant.as_str(), contact.as_str(), now],
            |r| {
                Ok(ContactRecord {
                    conversation: Conversation {
                        contact_id: contact.clone(),
                        name: r.get(0)?,
                        last_message_at: r.get(1)?,
                        last_inbound_at: r.get(2)?,
                        unread: r.get(3)?,
                        opted_out: r.get(4)?,
                    },
                    wa_id: r.get(5)?,
                    user_id: r.get(6)?,
                    username: r.get(7)?,
                    phone_number_id: r.get(8)?,
                    send_backoff_until: r.get(9)?,
                })
            },
        )
        .optional()
        .map_err(db_err)
    }

    async fn record_consent(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &ConsentEntry,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(db_err)?;
        let n = tx
            .execute(
                "INSERT INTO consent (tenant, contact_id, key, at, body, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO NOTHING",
                params![tenant.as_str(), contact.as_str(), entry.key, entry.at, to_json(entry), entry.expires_at],
            )
            .map_err(db_err)?;
        if n == 1 && entry.event.sets_opt_out() {
            // The newest entry decides; an older one arriving late does not override it.
            tx.execute(
                "UPDATE contacts SET opted_out = (
                    SELECT json_extract(body, '$.event') = 'opted_out' FROM consent
                    WHERE tenant = ?1 AND contact_id = ?2
                      AND json_extract(body, '$.event') IN ('opted_out', 'opted_in')
                    ORDER BY at DESC, key DESC LIMIT 1)
                 WHERE tenant = ?1 AND contact_id = ?2",
                params![tenant.as_str(), contact.as_str()],
            )
            .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT body FROM consent WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3 ORDER BY at, key",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), contact.as_str(), now], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db_err)?;
        rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
    }

    async fn claim_away_reply(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
        interval: i64,
    ) -> Result<bool, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "UPDATE contacts SET away_replied_at = ?3
                 WHERE tenant = ?1 AND contact_id = ?2 AND (away_replied_at IS NULL OR away_replied_at <= ?3 - ?4)",
                params![tenant.as_str(), contact.as_str(), now, interval],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

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

    async fn list_messages(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let (before_ts, before_key) = keyset(page)?;
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT body FROM messages
                 WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3
                   AND (timestamp < ?4 OR (timestamp = ?4 AND wamid_key < ?5))
                 ORDER BY timestamp DESC, wamid_key DESC LIMIT ?6",
            )
            .map_err(db_err)?;
        let limit = page.limit.max(1);
        let rows = stmt
            .query_map(
                params![
                    tenant.as_str(),
                    contact.as_str(),
                    now,
                    before_ts,
                    before_key,
                    (limit + 1) as i64
                ],
                |r| r.get::<_, String>(0),
            )
            .map_err(db_err)?;
        let mut items: Vec<StoredMessage> = Vec::new();
        for row in rows {
            items.push(from_json(&row.map_err(db_err)?)?);
        }
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|m| cursor::encode(&[&m.timestamp.to_string(), &m.wamid_key]))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn message_by_wamid(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let conn = self.db.lock();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM messages WHERE tenant = ?1 AND (wamid_key = ?2 OR alias_key = ?2) AND expires_at > ?3",
                params![tenant.as_str(), wamid_key, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn statuses(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Vec<StoredStatus>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT body FROM statuses WHERE tenant = ?1 AND wamid_key = ?2 AND expires_at > ?3 ORDER BY timestamp, status",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), wamid_key, now], |r| {
                r.get::<_, String>(0)
            })
            .map_err(db_err)?;
        rows.map(|r| from_json(&r.map_err(db_err)?)).collect()
    }

    async fn create_upload(&self, tenant: &TenantId, upload: &Upload) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT INTO uploads (tenant, media_id, contact_id, body, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![
                tenant.as_str(),
                upload.media_id,
                upload.contact_id.as_str(),
                to_json(upload),
                upload.expires_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn upload(
        &self,
        tenant: &TenantId,
        media_id: &str,
        now: i64,
    ) -> Result<Option<Upload>, StoreError> {
        let conn = self.db.lock();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM uploads WHERE tenant = ?1 AND media_id = ?2 AND expires_at > ?3",
                params![tenant.as_str(), media_id, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn set_media(
        &self,
        tenant: &TenantId,
        message_key: &str,
        media: &relay_core::media::MediaInfo,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE messages SET body = json_set(body, '$.media', json(?3))
             WHERE tenant = ?1 AND (wamid_key = ?2 OR alias_key = ?2)",
            params![tenant.as_str(), message_key, to_json(media)],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn add_media_failure(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        let conn = self.db.lock();
        conn.query_row(
            "INSERT INTO media_failures (phone_number_id, hour, failures, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (phone_number_id, hour) DO UPDATE SET failures = failures + 1
             RETURNING failures",
            params![phone_number_id, hour, (hour + 2) * 3600],
            |r| r.get(0),
        )
        .map_err(db_err)
    }

    async fn media_failures(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        let conn = self.db.lock();
        Ok(conn
            .query_row(
                "SELECT failures FROM media_failures WHERE phone_number_id = ?1 AND hour = ?2",
                params![phone_number_id, hour],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?
            .unwrap_or(0))
    }

    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare("SELECT identity_key FROM identities WHERE tenant = ?1 AND contact_id = ?2 ORDER BY identity_key")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![tenant.as_str(), contact.as_str()], |r| r.get(0))
            .map_err(db_err)?;
        rows.collect::<Result<Vec<String>, _>>().map_err(db_err)
    }

    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError> {
        let (t, c) = (tenant.as_str(), contact.as_str());
        let mut erased = ErasedItems::default();
        {
            let mut conn = self.db.lock();
            let tx = conn.transaction().map_err(db_err)?;
            let run = |sql: &str| tx.execute(sql, params![t, c]).map_err(db_err);
            erased.statuses = run(
                "DELETE FROM statuses WHERE tenant = ?1 AND wamid_key IN (
                   SELECT wamid_key FROM messages WHERE tenant = ?1 AND contact_id = ?2
                   UNION SELECT alias_key FROM messages WHERE tenant = ?1 AND contact_id = ?2 AND alias_key IS NOT NULL)",
            )?;
            erased.index_items = run(
                "DELETE FROM idempotency WHERE tenant = ?1 AND message_key IN (
                   SELECT wamid_key FROM messages WHERE tenant = ?1 AND contact_id = ?2)",
            )?;
            erased.messages = run("DELETE FROM messages WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.consent_entries =
                run("DELETE FROM consent WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.index_items += run("DELETE FROM uploads WHERE tenant = ?1 AND contact_id = ?2")?;
            erased.identities =
                run("DELETE FROM identities WHERE tenant = ?1 AND contact_id = ?2")?;
            for key in identity_keys {
                erased.identities += tx
                    .execute(
                        "DELETE FROM identities WHERE tenant = ?1 AND identity_key = ?2",
                        params![t, key],
                    )
                    .map_err(db_err)?;
            }
            erased.profile = run("DELETE FROM contacts WHERE tenant = ?1 AND contact_id = ?2")?;
            tx.commit().map_err(db_err)?;
        }
        self.db.checkpoint().map_err(db_err)?;
        Ok(erased)
    }
}

/// Wrapped data keys in the `data_keys` table.
#[derive(Clone)]
pub struct SqliteKeyStore {
    db: Database,
}

impl SqliteKeyStore {
    pub fn new(db: Database) -> Self {
        SqliteKeyStore { db }
    }
}

fn key_err(e: rusqlite::Error) -> CryptoError {
    CryptoError::Unavailable(format!("sqlite: {e}"))
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn load(
        &self,
        tenant: &TenantId,
        keyref: &str,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let conn = self.db.lock();
        conn.query_row(
            "SELECT key_id, wrapped, expires_at FROM data_keys WHERE tenant = ?1 AND keyref = ?2
             AND (expires_at IS NULL OR expires_at > ?3)",
            params![tenant.as_str(), keyref, now],
            |r| {
                Ok(WrappedKey {
                    key_id: r.get(0)?,
                    wrapped: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(key_err)
    }

    async fn insert(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key: &WrappedKey,
        now: i64,
    ) -> Result<Option<WrappedKey>, CryptoError> {
        let n = {
            let conn = self.db.lock();
            // An expired (not yet swept) key may be replaced, as on DynamoDB.
            conn.execute(
                "INSERT INTO data_keys (tenant, keyref, key_id, wrapped, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, keyref) DO UPDATE SET
                   key_id = excluded.key_id, wrapped = excluded.wrapped, expires_at = excluded.expires_at
                 WHERE data_keys.expires_at IS NOT NULL AND data_keys.expires_at <= ?6",
                params![tenant.as_str(), keyref, key.key_id, key.wrapped, key.expires_at, now],
            )
            .map_err(key_err)?
        };
        if n == 1 {
            Ok(None)
        } else {
            self.load(tenant, keyref, now).await
        }
    }

    async fn extend(
        &self,
        tenant: &TenantId,
        keyref: &str,
        key_id: &str,
        expires_at: i64,
    ) -> Result<(), CryptoError> {
        let conn = self.db.lock();
        conn.execute(
            "UPDATE data_keys SET expires_at = max(coalesce(expires_at, 0), ?4)
             WHERE tenant = ?1 AND keyref = ?2 AND key_id = ?3",
            params![tenant.as_str(), keyref, key_id, expires_at],
        )
        .map_err(key_err)?;
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, keyref: &str) -> Result<bool, CryptoError> {
        let n = {
            let conn = self.db.lock();
            conn.execute(
                "DELETE FROM data_keys WHERE tenant = ?1 AND keyref = ?2",
                params![tenant.as_str(), keyref],
            )
            .map_err(key_err)?
        };
        self.db.checkpoint().map_err(key_err)?;
        Ok(n == 1)
    }
}

/// The audit log in the `audit` table (append-only by trigger).
#[derive(Clone)]
pub struct SqliteAuditLog {
    db: Database,
}

impl SqliteAuditLog {
    pub fn new(db: Database) -> Self {
        SqliteAuditLog { db }
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn append(&self, e: &AuditEntry) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT INTO audit (tenant, at_ms, actor, action, target, result, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.tenant.as_str(),
                e.at_ms,
                e.actor,
                e.action,
                e.target,
                e.result,
                e.expires_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn list(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
        now: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare(
                "SELECT tenant, at_ms, actor, action, target, result, expires_at FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND expires_at > ?2
                 ORDER BY at_ms DESC, id DESC LIMIT ?3",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(
                params![tenant.map(TenantId::as_str), now, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        AuditEntry {
                            at_ms: r.get(1)?,
                            tenant: TenantId::system(),
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            target: r.get(4)?,
                            result: r.get(5)?,
                            expires_at: r.get(6)?,
                        },
                    ))
                },
            )
            .map_err(db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (t, mut e) = row.map_err(db_err)?;
            e.tenant = TenantId::parse(&t)
                .map_err(|_| StoreError::Corrupt("audit row with an invalid tenant".into()))?;
            out.push(e);
        }
        Ok(out)
    }
}
