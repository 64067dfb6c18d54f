//! [`TeamBoard`] on DynamoDB: in the contact's partition, so erasure's partition sweep takes
//! them. Team state `T#{tenant}#C#{contact}` / `TEAM`; notes `…` / `N#{note id}`.

use super::*;
use relay_core::ports::TeamBoard;

#[async_trait]
impl TeamBoard for DynamoMessageStore {
    async fn team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<TeamState>, StoreError> {
        let Some(item) = self.get(contact_pk(tenant, contact), "TEAM").await? else {
            return Ok(None);
        };
        if get_n(&item, "expires_at").unwrap_or(0) <= now {
            return Ok(None);
        }
        Ok(Some(bodies::<TeamState>(&[item], "team state")?.remove(0)))
    }

    async fn set_team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        state: &TeamState,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(state).map_err(|e| corrupt(&e.to_string()))?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(contact_pk(tenant, contact)))
            .item("sk", s("TEAM"))
            .item("body", s(body))
            .item("updated_at", n(state.updated_at))
            .item("expires_at", n(state.expires_at))
            .condition_expression("attribute_not_exists(pk) OR updated_at <= :u")
            .expression_attribute_values(":u", n(state.updated_at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // A newer state is stored: it stays.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable(crate::sdk_error("PutItem", &e))),
        }
    }

    async fn add_note(&self, tenant: &TenantId, note: &Note) -> Result<Recorded, StoreError> {
        let body = serde_json::to_string(note).map_err(|e| corrupt(&e.to_string()))?;
        let mut item = Item::new();
        item.insert("pk".into(), s(contact_pk(tenant, &note.contact_id)));
        item.insert("sk".into(), s(format!("N#{}", note.id)));
        item.insert("body".into(), s(body));
        item.insert("expires_at".into(), n(note.expires_at));
        self.put_new(item).await
    }

    async fn notes(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Note>, StoreError> {
        let items = self
            .partition(contact_pk(tenant, contact), "N#", now)
            .await?;
        let mut notes: Vec<Note> = bodies(&items, "note")?;
        notes.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(notes)
    }
}
