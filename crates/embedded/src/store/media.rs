//! [`MediaLedger`] on SqliteMessageStore: media files' records.

use super::*;

#[async_trait]
impl MediaLedger for SqliteMessageStore {
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
}
