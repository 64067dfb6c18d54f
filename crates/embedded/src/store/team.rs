//! [`TeamBoard`] on SqliteMessageStore: team states and notes.

use super::*;
use relay_core::ports::TeamBoard;

#[async_trait]
impl TeamBoard for SqliteMessageStore {
    async fn team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<TeamState>, StoreError> {
        let conn = self.db.lock();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM team_states WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3",
                params![tenant.as_str(), contact.as_str(), now],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        body.map(|b| from_json(&b)).transpose()
    }

    async fn set_team_state(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        state: &TeamState,
    ) -> Result<(), StoreError> {
        let conn = self.db.lock();
        conn.execute(
            "INSERT INTO team_states (tenant, contact_id, body, updated_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant, contact_id) DO UPDATE SET body = excluded.body,
                 updated_at = excluded.updated_at, expires_at = excluded.expires_at
             WHERE excluded.updated_at >= team_states.updated_at",
            params![
                tenant.as_str(),
                contact.as_str(),
                to_json(state),
                state.updated_at,
                state.expires_at
            ],
        )
        .map_err(db_err)?;
        Ok(())
    }

    async fn add_note(&self, tenant: &TenantId, note: &Note) -> Result<Recorded, StoreError> {
        let conn = self.db.lock();
        let n = conn
            .execute(
                "INSERT INTO notes (tenant, id, contact_id, body, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT DO NOTHING",
                params![
                    tenant.as_str(),
                    note.id,
                    note.contact_id.as_str(),
                    to_json(note),
                    note.created_at,
                    note.expires_at
                ],
            )
            .map_err(db_err)?;
        Ok(inserted(n))
    }

    async fn notes(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Note>, StoreError> {
        bodies(
            &self.db.lock(),
            "SELECT body FROM notes WHERE tenant = ?1 AND contact_id = ?2 AND expires_at > ?3
             ORDER BY created_at, id",
            params![tenant.as_str(), contact.as_str(), now],
        )
    }
}
