//! [`InboxReads`] on SqliteMessageStore: what the inbox api reads.

use super::*;

#[async_trait]
impl InboxReads for SqliteMessageStore {
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
                    phone_number_id, send_backoff_until, parent_user_id
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
                    parent_user_id: r.get(10)?,
                    phone_number_id: r.get(8)?,
                    send_backoff_until: r.get(9)?,
                })
            },
        )
        .optional()
        .map_err(db_err)
    }

    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        bodies(
            &self.db.lock(),
            "SELECT body FROM consent WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3 ORDER BY at, key",
            params![tenant.as_str(), contact.as_str(), now],
        )
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
        bodies(
            &self.db.lock(),
            "SELECT body FROM statuses WHERE tenant = ?1 AND wamid_key = ?2 AND expires_at > ?3 ORDER BY timestamp, status",
            params![tenant.as_str(), wamid_key, now],
        )
    }
}
