//! [`MediaLedger`] on DynamoMessageStore: media files' records.

use super::*;

#[async_trait]
impl MediaLedger for DynamoMessageStore {
    async fn create_upload(&self, tenant: &TenantId, upload: &Upload) -> Result<(), StoreError> {
        let pk = contact_pk(tenant, &upload.contact_id);
        let sk = format!("U#{}", upload.media_id);
        let body = serde_json::to_string(upload).map_err(|_| corrupt("upload"))?;
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s(&sk))
            .item("body", s(body))
            .item("expires_at", n(upload.expires_at))
            .build()
            .map_err(|_| corrupt("put"))?;
        let pointer = Put::builder()
            .table_name(&self.table)
            .item("pk", s(wamid_pk(tenant, &upload.media_id)))
            .item("sk", s(POINTER))
            .item("msg_pk", s(&pk))
            .item("msg_sk", s(&sk))
            .item("expires_at", n(upload.expires_at))
            .build()
            .map_err(|_| corrupt("put"))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().put(pointer).build())
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("TransactWriteItems", &e)))?;
        Ok(())
    }

    async fn upload(
        &self,
        tenant: &TenantId,
        media_id: &str,
        now: i64,
    ) -> Result<Option<Upload>, StoreError> {
        let Some((pk, sk)) = self.locate(tenant, media_id).await? else {
            return Ok(None);
        };
        let Some(item) = self.get(pk, &sk).await? else {
            return Ok(None);
        };
        if get_n(&item, "expires_at").unwrap_or(0) <= now {
            return Ok(None);
        }
        let body = get_s(&item, "body").ok_or_else(|| corrupt("upload without body"))?;
        serde_json::from_str(body)
            .map(Some)
            .map_err(|_| corrupt("upload body is not valid JSON"))
    }

    async fn set_media(
        &self,
        tenant: &TenantId,
        message_key: &str,
        media: &relay_core::media::MediaInfo,
    ) -> Result<(), StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(());
        };
        let mut v = Item::new();
        v.insert(
            ":m".into(),
            s(serde_json::to_string(media).map_err(|_| corrupt("media"))?),
        );
        self.update_if(pk, &sk, "SET media = :m", "attribute_exists(pk)", v)
            .await
            .map(|_| ())
    }

    async fn add_media_failure(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("MEDIAFAIL#{phone_number_id}")))
            .key("sk", s(hour.to_string()))
            .update_expression("ADD failures :one SET expires_at = :e")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":e", n((hour + 2) * 3600))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("UpdateItem", &e)))?;
        Ok(out
            .attributes
            .as_ref()
            .and_then(|a| get_n(a, "failures"))
            .unwrap_or(0) as u32)
    }

    async fn media_failures(&self, phone_number_id: &str, hour: i64) -> Result<u32, StoreError> {
        Ok(self
            .get(format!("MEDIAFAIL#{phone_number_id}"), &hour.to_string())
            .await?
            .and_then(|i| get_n(&i, "failures"))
            .unwrap_or(0) as u32)
    }
}
