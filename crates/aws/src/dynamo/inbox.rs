//! [`InboxReads`] on DynamoMessageStore: what the inbox api reads.

use super::*;

#[async_trait]
impl InboxReads for DynamoMessageStore {
    async fn list_quarantine(
        &self,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let items = self.partition("QUARANTINE".to_owned(), "Q#", now).await?;
        let mut out: Vec<Quarantined> = bodies(&items, "quarantine")?;
        out.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.key.cmp(&b.key)));
        out.truncate(limit);
        Ok(out)
    }

    async fn list_conversations(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<Conversation>, StoreError> {
        let limit = page.limit.max(1);
        let start = match &page.cursor {
            None => None,
            Some(c) => {
                let p = cursor::decode(c, 2).ok_or(StoreError::InvalidCursor)?;
                let ts: i64 = p[0].parse().map_err(|_| StoreError::InvalidCursor)?;
                let contact = ContactId::parse(&p[1]).map_err(|_| StoreError::InvalidCursor)?;
                let mut k = Item::new();
                k.insert("pk".into(), s(contact_pk(tenant, &contact)));
                k.insert("sk".into(), s(PROFILE));
                k.insert("gsi1pk".into(), s(conv_gsi_pk(tenant)));
                k.insert("gsi1sk".into(), s(format!("{ts:012}#{contact}")));
                Some(k)
            }
        };
        let mut values = Item::new();
        values.insert(":g".into(), s(conv_gsi_pk(tenant)));
        let items = self
            .query_live(
                LiveQuery {
                    index: Some("gsi1"),
                    key_condition: "gsi1pk = :g",
                    values,
                    start,
                    forward: false,
                },
                limit + 1,
                now,
            )
            .await?;
        let convs = items
            .iter()
            .map(Self::conversation_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_items(convs, limit, |c| {
            cursor::encode(&[&c.last_message_at.to_string(), c.contact_id.as_str()])
        }))
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        match self.get(contact_pk(tenant, contact), PROFILE).await? {
            Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                Ok(Some(Self::conversation_from(&item)?))
            }
            _ => Ok(None),
        }
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let limit = page.limit.max(1);
        let pk = contact_pk(tenant, contact);
        let start = match &page.cursor {
            None => None,
            Some(c) => {
                let p = cursor::decode(c, 2).ok_or(StoreError::InvalidCursor)?;
                let ts: i64 = p[0].parse().map_err(|_| StoreError::InvalidCursor)?;
                if p[1].is_empty() || !p[1].bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StoreError::InvalidCursor);
                }
                let mut k = Item::new();
                k.insert("pk".into(), s(&pk));
                k.insert("sk".into(), s(message_sk(ts, &p[1])));
                Some(k)
            }
        };
        let mut values = Item::new();
        values.insert(":pk".into(), s(&pk));
        values.insert(":m".into(), s("M#"));
        let items = self
            .query_live(
                LiveQuery {
                    index: None,
                    key_condition: "pk = :pk AND begins_with(sk, :m)",
                    values,
                    start,
                    forward: false,
                },
                limit + 1,
                now,
            )
            .await?;
        let msgs = items
            .iter()
            .map(Self::message_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_items(msgs, limit, |m| {
            cursor::encode(&[&m.timestamp.to_string(), &m.wamid_key])
        }))
    }

    async fn message_by_wamid(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let Some(pointer) = self.get(wamid_pk(tenant, wamid_key), POINTER).await? else {
            return Ok(None);
        };
        let (Some(pk), Some(sk)) = (get_s(&pointer, "msg_pk"), get_s(&pointer, "msg_sk")) else {
            return Err(corrupt("pointer without target"));
        };
        match self.get(pk.to_owned(), sk).await? {
            Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                Ok(Some(Self::message_from(&item)?))
            }
            _ => Ok(None),
        }
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<ContactRecord>, StoreError> {
        match self.get(contact_pk(tenant, contact), PROFILE).await? {
            Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                Ok(Some(ContactRecord {
                    conversation: Self::conversation_from(&item)?,
                    wa_id: get_s(&item, "wa_id").map(str::to_owned),
                    user_id: get_s(&item, "user_id").map(str::to_owned),
                    username: get_s(&item, "username").map(str::to_owned),
                    parent_user_id: get_s(&item, "parent_user_id").map(str::to_owned),
                    phone_number_id: get_s(&item, "phone_number_id").map(str::to_owned),
                    send_backoff_until: get_n(&item, "send_backoff_until").unwrap_or(0),
                }))
            }
            _ => Ok(None),
        }
    }

    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        let items = self
            .partition(contact_pk(tenant, contact), "L#", now)
            .await?;
        let mut entries: Vec<ConsentEntry> = bodies(&items, "consent")?;
        entries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.key.cmp(&b.key)));
        Ok(entries)
    }

    async fn statuses(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Vec<StoredStatus>, StoreError> {
        let items = self
            .partition(wamid_pk(tenant, wamid_key), "ST#", now)
            .await?;
        let mut out: Vec<StoredStatus> = bodies(&items, "status")?;
        out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.status.cmp(&b.status)));
        Ok(out)
    }
}
