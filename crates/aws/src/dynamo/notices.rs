//! [`NoticeBoard`] on DynamoDB: `T#{tenant}#C#{contact}` / `NOTICE#{kind}#{reference}`, in the
//! contact's partition (erasure's partition sweep takes it). While a reminder is owed, the item
//! is in `gsi1` under `NOTICEDUE` with `gsi1sk = {due:012}#{tenant}#…`, so the sweep finds the
//! reminders due across tenants with one query; an update that settles it leaves the index.

use super::*;
use relay_core::ports::NoticeBoard;

const DUE_PK: &str = "NOTICEDUE";

fn notice_sk(kind: &str, reference: &str) -> String {
    format!("NOTICE#{kind}#{reference}")
}

fn notice_item(tenant: &TenantId, notice: &Notice) -> Result<Item, StoreError> {
    let body = serde_json::to_string(notice).map_err(|e| corrupt(&e.to_string()))?;
    let mut item = Item::new();
    item.insert("pk".into(), s(contact_pk(tenant, &notice.contact_id)));
    item.insert("sk".into(), s(notice_sk(&notice.kind, &notice.reference)));
    item.insert("tenant".into(), s(tenant.as_str().to_owned()));
    item.insert("body".into(), s(body));
    item.insert("expires_at".into(), n(notice.expires_at));
    let due = notice
        .remind_at
        .filter(|_| notice.collected_at.is_none() && notice.reminder.is_none());
    if let Some(due) = due {
        item.insert("gsi1pk".into(), s(DUE_PK.to_owned()));
        item.insert(
            "gsi1sk".into(),
            s(format!(
                "{due:012}#{tenant}#{}#{}#{}",
                notice.contact_id, notice.kind, notice.reference
            )),
        );
    }
    Ok(item)
}

#[async_trait]
impl NoticeBoard for DynamoMessageStore {
    async fn add_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<Recorded, StoreError> {
        self.put_new(notice_item(tenant, notice)?).await
    }

    async fn notice(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        kind: &str,
        reference: &str,
        now: i64,
    ) -> Result<Option<Notice>, StoreError> {
        let Some(item) = self
            .get(contact_pk(tenant, contact), &notice_sk(kind, reference))
            .await?
        else {
            return Ok(None);
        };
        if get_n(&item, "expires_at").unwrap_or(0) <= now {
            return Ok(None);
        }
        Ok(Some(bodies::<Notice>(&[item], "notice")?.remove(0)))
    }

    async fn update_notice(&self, tenant: &TenantId, notice: &Notice) -> Result<(), StoreError> {
        // The whole item, so that a settled notice drops its index attributes. Only an item
        // that exists is replaced (an erased contact's notice stays erased).
        self.put_if(notice_item(tenant, notice)?, "attribute_exists(pk)")
            .await
            .map(|_| ())
    }

    async fn notices(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<Notice>, StoreError> {
        let items = self
            .partition(contact_pk(tenant, contact), "NOTICE#", now)
            .await?;
        let mut notices: Vec<Notice> = bodies(&items, "notice")?;
        notices.sort_by(|a, b| {
            (a.sent_at, &a.kind, &a.reference).cmp(&(b.sent_at, &b.kind, &b.reference))
        });
        Ok(notices)
    }

    async fn due_notices(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(TenantId, Notice)>, StoreError> {
        let mut values = Item::new();
        values.insert(":g".into(), s(DUE_PK.to_owned()));
        // Every key of a due time up to now sorts below "{now+1:012}".
        values.insert(":upto".into(), s(format!("{:012}", now.saturating_add(1))));
        let items = self
            .query_live(
                LiveQuery {
                    index: Some("gsi1"),
                    key_condition: "gsi1pk = :g AND gsi1sk < :upto",
                    values,
                    start: None,
                    forward: true,
                },
                limit.max(1),
                now,
            )
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let tenant = get_s(item, "tenant")
                .and_then(|t| TenantId::parse(t).ok())
                .ok_or_else(|| corrupt("notice without tenant"))?;
            out.push((
                tenant,
                bodies::<Notice>(std::slice::from_ref(item), "notice")?.remove(0),
            ));
        }
        Ok(out)
    }
}
