//! [`TeamBoard`] on SealedStore: labels and notes are sealed under the contact's key (they say
//! something about the person); the assignee (a staff id) and the flags are not personal.

use super::*;
use crate::ports::TeamBoard;

#[async_trait]
impl TeamBoard for SealedStore {
    async fn team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<TeamState>, StoreError> {
        let Some(mut state) = self.inner.team_state(tenant, contact, now).await? else {
            return Ok(None);
        };
        let mut labels = Vec::with_capacity(state.labels.len());
        for label in state.labels {
            match open_field(&self.keys, tenant, "team.label", Some(label)).await? {
                Some(l) => labels.push(l),
                // The key is gone: the contact was erased.
                None => return Ok(None),
            }
        }
        state.labels = labels;
        Ok(Some(state))
    }

    async fn set_team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        state: &TeamState,
    ) -> Result<(), StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, contact, state.expires_at)
            .await?;
        let mut sealed = state.clone();
        sealed.labels = state
            .labels
            .iter()
            .map(|l| s.seal_str("team.label", l))
            .collect();
        self.inner.set_team_state(tenant, contact, &sealed).await
    }

    async fn add_note(&self, tenant: &TenantId, note: &Note) -> Result<Recorded, StoreError> {
        let s = self
            .keys
            .contact_sealer(tenant, &note.contact_id, note.expires_at)
            .await?;
        let mut sealed = note.clone();
        sealed.text = s.seal_str("note.text", &note.text);
        self.inner.add_note(tenant, &sealed).await
    }

    async fn notes(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Note>, StoreError> {
        let mut out = Vec::new();
        for mut n in self.inner.notes(tenant, contact, now).await? {
            if let Some(text) = open_field(&self.keys, tenant, "note.text", Some(n.text)).await? {
                n.text = text;
                out.push(n);
            }
        }
        Ok(out)
    }
}
