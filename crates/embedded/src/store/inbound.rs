//! [`InboundLog`] on SqliteMessageStore: what the router writes.

use super::*;

#[async_trait]
impl InboundLog for SqliteMessageStore {
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

    async fn link_identities(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        // The identities table is the contact's list of identities; each key not yet anyone's.
        for key in identity_keys {
            self.resolve_contact(tenant, std::slice::from_ref(key), contact, expires_at)
                .await?;
        }
        Ok(())
    }

    async fn rename_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        name: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "UPDATE contacts SET name = ?3 WHERE tenant = ?1 AND contact_id = ?2",
                params![tenant.as_str(), contact.as_str(), name],
            )
            .map_err(db_err)?;
        Ok(n > 0)
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
        let unread = i64::from(n == 1 && contact.unread);
        tx.execute(
            "INSERT INTO contacts (tenant, contact_id, name, wa_id, user_id, username, last_inbound_at, last_message_at, unread, expires_at, phone_number_id, parent_user_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?11, ?8, ?9, ?10, ?12)
             ON CONFLICT (tenant, contact_id) DO UPDATE SET
               parent_user_id = coalesce(excluded.parent_user_id, parent_user_id),
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
                contact.phone_number_id,
                contact.last_message_at,
                contact.parent_user_id
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
}
