//! [`OutboundLedger`] on SealedStore: replies and their sending.

use super::*;

#[async_trait]
impl OutboundLedger for SealedStore {
    async fn clear_unread(&self, tenant: &TenantId, contact: &ContactId) -> Result<(), StoreError> {
        self.inner.clear_unread(tenant, contact).await
    }

    async fn set_send_backoff(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        until: i64,
    ) -> Result<(), StoreError> {
        self.inner.set_send_backoff(tenant, contact, until).await
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &message.contact_id, message.expires_at)
            .await?;
        let message = Self::seal_message(&s, message);
        self.inner
            .create_outbound(tenant, &message, idempotency)
            .await
    }

    async fn claim_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<Claim, StoreError> {
        self.inner
            .claim_send(tenant, message_key, now, lease_secs)
            .await
    }

    async fn complete_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        contact: &ContactId,
        wamid: &str,
        wamid_key: &str,
    ) -> Result<(), StoreError> {
        // The wamid is sealed under the key of the contact the message went to (its current
        // generation: if the contact was erased meanwhile, the message is gone as well).
        let s = self
            .keys
            .sealer(tenant, crate::crypto::contact_keyref(contact), None)
            .await?;
        let sealed = s.seal_str("message.wamid", wamid);
        self.inner
            .complete_send(tenant, message_key, contact, &sealed, wamid_key)
            .await
    }

    async fn fail_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        error: &ApiError,
    ) -> Result<(), StoreError> {
        self.inner.fail_send(tenant, message_key, error).await
    }

    async fn release_send(&self, tenant: &TenantId, message_key: &str) -> Result<(), StoreError> {
        self.inner.release_send(tenant, message_key).await
    }
}
