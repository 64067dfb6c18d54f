//! [`NoticeBoard`] on SealedStore: passed through. A notice holds ids, times and the
//! pharmacy's own order reference, nothing about the person; it lives in the contact's data
//! all the same (erased with it).

use super::*;
use crate::ports::NoticeBoard;

#[async_trait]
impl NoticeBoard for SealedStore {
    async fn add_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<Recorded, StoreError> {
        self.inner.add_notice(tenant, notice).await
    }

    async fn notice(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        kind: &str,
        reference: &str,
        now: i64,
    ) -> Result<Option<Notice>, StoreError> {
        self.inner
            .notice(tenant, contact, kind, reference, now)
            .await
    }

    async fn update_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<(), StoreError> {
        self.inner.update_notice(tenant, notice).await
    }

    async fn notices(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Notice>, StoreError> {
        self.inner.notices(tenant, contact, now).await
    }

    async fn due_notices(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(TenantId, Notice)>, StoreError> {
        self.inner.due_notices(now, limit).await
    }
}
