//! [`MediaLedger`] on SealedStore: media files' records.

use super::*;

#[async_trait]
impl MediaLedger for SealedStore {
    async fn create_upload(&self, tenant: &TenantId, upload: &Upload) -> Result<(), StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &upload.contact_id, upload.expires_at)
            .await?;
        let mut upload = upload.clone();
        upload.filename = seal_opt(&s, "upload.filename", &upload.filename);
        self.inner.create_upload(tenant, &upload).await
    }

    async fn upload(
        &self,
        tenant: &TenantId,
        media_id: &str,
        now: i64,
    ) -> Result<Option<Upload>, StoreError> {
        match self.inner.upload(tenant, media_id, now).await? {
            Some(mut u) => {
                u.filename = open_field(&self.keys, tenant, "upload.filename", u.filename).await?;
                Ok(Some(u))
            }
            None => Ok(None),
        }
    }

    async fn set_media(
        &self,
        tenant: &TenantId,
        message_key: &str,
        media: &crate::media::MediaInfo,
    ) -> Result<(), StoreError> {
        self.inner.set_media(tenant, message_key, media).await
    }

    async fn add_media_failure(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        self.inner.add_media_failure(phone_number_id, hour).await
    }

    async fn media_failures(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        self.inner.media_failures(phone_number_id, hour).await
    }
}
