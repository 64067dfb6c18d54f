//! [`ErasureStore`] on SealedStore: erasure of a contact.

use super::*;

#[async_trait]
impl ErasureStore for SealedStore {
    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.contact_identity_keys(tenant, contact).await
    }

    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError> {
        self.inner
            .erase_contact(tenant, contact, identity_keys)
            .await
    }
}
