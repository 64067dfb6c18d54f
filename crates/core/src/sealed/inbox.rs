//! [`InboxReads`] on SealedStore: what the inbox api reads.

use super::*;

#[async_trait]
impl InboxReads for SealedStore {
    async fn list_quarantine(
        &self,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let system = TenantId::system();
        let mut out = Vec::new();
        for mut q in self.inner.list_quarantine(limit, now).await? {
            q.payload = open_value(&self.keys, &system, "quarantine.payload", q.payload)
                .await?
                .unwrap_or(Value::Null);
            out.push(q);
        }
        Ok(out)
    }

    async fn list_conversations(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<Conversation>, StoreError> {
        let p = self.inner.list_conversations(tenant, page, now).await?;
        let mut items = Vec::with_capacity(p.items.len());
        for c in p.items {
            items.push(self.open_conversation(tenant, c).await?);
        }
        Ok(Page {
            items,
            next_cursor: p.next_cursor,
        })
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        match self.inner.conversation(tenant, contact, now).await? {
            Some(c) => Ok(Some(self.open_conversation(tenant, c).await?)),
            None => Ok(None),
        }
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let p = self.inner.list_messages(tenant, contact, page, now).await?;
        Ok(Page {
            items: self.open_messages(tenant, p.items).await?,
            next_cursor: p.next_cursor,
        })
    }

    async fn message_by_wamid(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        match self.inner.message_by_wamid(tenant, wamid_key, now).await? {
            Some(m) => self.open_message(tenant, m).await,
            None => Ok(None),
        }
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<ContactRecord>, StoreError> {
        let Some(mut c) = self.inner.contact(tenant, contact, now).await? else {
            return Ok(None);
        };
        let k = &self.keys;
        c.conversation = self.open_conversation(tenant, c.conversation).await?;
        c.wa_id = open_field(k, tenant, "contact.wa_id", c.wa_id).await?;
        c.user_id = open_field(k, tenant, "contact.user_id", c.user_id).await?;
        c.username = open_field(k, tenant, "contact.username", c.username).await?;
        c.parent_user_id =
            open_field(k, tenant, "contact.parent_user_id", c.parent_user_id).await?;
        Ok(Some(c))
    }

    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        self.inner.consent_ledger(tenant, contact, now).await
    }

    async fn statuses(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Vec<StoredStatus>, StoreError> {
        self.inner.statuses(tenant, wamid_key, now).await
    }
}
