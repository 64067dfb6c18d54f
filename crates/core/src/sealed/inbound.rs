//! [`InboundLog`] on SealedStore: what the router writes.

use super::*;

#[async_trait]
impl InboundLog for SealedStore {
    async fn resolve_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
        proposed: &ContactId,
        expires_at: i64,
    ) -> Result<ContactId, StoreError> {
        self.inner
            .resolve_contact(tenant, identity_keys, proposed, expires_at)
            .await
    }

    async fn link_identities(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .link_identities(tenant, contact, identity_keys, expires_at)
            .await
    }

    async fn rename_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        name: &str,
    ) -> Result<bool, StoreError> {
        let now = self.keys.clock().now();
        if self.inner.contact(tenant, contact, now).await?.is_none() {
            return Ok(false);
        }
        // The contact's key exists and lives as long as its data: no extension needed.
        let s = self.keys.contact_sealer(tenant, contact, now).await?;
        let sealed = seal_opt(&s, "contact.name", &Some(name.to_owned())).unwrap_or_default();
        self.inner.rename_contact(tenant, contact, &sealed).await
    }

    async fn find_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
    ) -> Result<Option<ContactId>, StoreError> {
        self.inner.find_contact(tenant, identity_keys).await
    }

    async fn record_inbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
    ) -> Result<Recorded, StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &message.contact_id, message.expires_at)
            .await?;
        let message = Self::seal_message(&s, message);
        let mut contact = contact.clone();
        contact.name = seal_opt(&s, "contact.name", &contact.name);
        contact.wa_id = seal_opt(&s, "contact.wa_id", &contact.wa_id);
        contact.user_id = seal_opt(&s, "contact.user_id", &contact.user_id);
        contact.username = seal_opt(&s, "contact.username", &contact.username);
        contact.parent_user_id = seal_opt(&s, "contact.parent_user_id", &contact.parent_user_id);
        self.inner.record_inbound(tenant, &message, &contact).await
    }

    async fn record_status(
        &self,
        tenant: &TenantId,
        status: &StoredStatus,
    ) -> Result<Recorded, StoreError> {
        self.inner.record_status(tenant, status).await
    }

    async fn record_event(
        &self,
        tenant: &TenantId,
        event: &StoredEvent,
    ) -> Result<Recorded, StoreError> {
        let s = self
            .keys
            .sealer(tenant, EVENTS_KEYREF, Some(event.expires_at))
            .await?;
        let mut event = event.clone();
        event.payload = seal_value(&s, "event.payload", &event.payload);
        self.inner.record_event(tenant, &event).await
    }

    async fn quarantine(&self, item: &Quarantined) -> Result<Recorded, StoreError> {
        let system = TenantId::system();
        let s = self
            .keys
            .sealer(&system, EVENTS_KEYREF, Some(item.expires_at))
            .await?;
        let mut item = item.clone();
        item.payload = seal_value(&s, "quarantine.payload", &item.payload);
        self.inner.quarantine(&item).await
    }

    async fn record_consent(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &ConsentEntry,
    ) -> Result<Recorded, StoreError> {
        self.inner.record_consent(tenant, contact, entry).await
    }

    async fn claim_away_reply(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
        interval: i64,
    ) -> Result<bool, StoreError> {
        self.inner
            .claim_away_reply(tenant, contact, now, interval)
            .await
    }
}
