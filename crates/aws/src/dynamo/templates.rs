//! [`TemplateStore`] on DynamoDB: `T#{tenant}#TPL` / `{name}#{language}`, `body` JSON.

use super::*;
use relay_core::templates::{Template, TemplateStore};

/// Templates do not expire (the reads skip items without a live `expires_at`).
const NEVER: i64 = 253_402_300_799; // 9999-12-31

fn templates_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#TPL")
}

#[async_trait]
impl TemplateStore for DynamoMessageStore {
    async fn replace_templates(
        &self,
        tenant: &TenantId,
        templates: &[Template],
    ) -> Result<(), StoreError> {
        let pk = templates_pk(tenant);
        let keep: std::collections::HashSet<String> = templates
            .iter()
            .map(|t| format!("{}#{}", t.name, t.language))
            .collect();
        for t in templates {
            let body = serde_json::to_string(t).map_err(|e| corrupt(&e.to_string()))?;
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(&pk))
                .item("sk", s(format!("{}#{}", t.name, t.language)))
                .item("body", s(body))
                .item("expires_at", n(NEVER))
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(crate::sdk_error("PutItem", &e)))?;
        }
        // Those the provider no longer lists go.
        for item in self.partition(pk.clone(), "", i64::MIN).await? {
            let sk = get_s(&item, "sk").unwrap_or_default().to_owned();
            if !keep.contains(&sk) {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(&pk))
                    .key("sk", s(sk))
                    .send()
                    .await
                    .map_err(|e| StoreError::Unavailable(crate::sdk_error("DeleteItem", &e)))?;
            }
        }
        Ok(())
    }

    async fn templates(&self, tenant: &TenantId) -> Result<Vec<Template>, StoreError> {
        let items = self.partition(templates_pk(tenant), "", i64::MIN).await?;
        let mut out: Vec<Template> = bodies(&items, "template")?;
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| a.language.cmp(&b.language))
        });
        Ok(out)
    }
}

fn quick_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#QR")
}

#[async_trait]
impl relay_core::templates::QuickReplies for DynamoMessageStore {
    async fn put_quick_reply(
        &self,
        tenant: &TenantId,
        reply: &relay_core::templates::QuickReply,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(reply).map_err(|e| corrupt(&e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(quick_pk(tenant)))
            .item("sk", s(&reply.id))
            .item("body", s(body))
            .item("expires_at", n(NEVER))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(crate::sdk_error("PutItem", &e)))?;
        Ok(())
    }

    async fn remove_quick_reply(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(quick_pk(tenant)))
            .key("sk", s(id))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(crate::sdk_error("DeleteItem", &e)))?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }

    async fn quick_replies(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<relay_core::templates::QuickReply>, StoreError> {
        let items = self.partition(quick_pk(tenant), "", i64::MIN).await?;
        let mut out: Vec<relay_core::templates::QuickReply> = bodies(&items, "quick reply")?;
        out.sort_by_key(|q| q.title.to_lowercase());
        Ok(out)
    }
}

fn usage_pk(tenant: &TenantId, month: &str) -> String {
    format!("T#{tenant}#USAGE#{month}")
}

/// Usage on DynamoDB: a marker `T#{tenant}#W#{wamid_key}` / `USAGE` per counted message (it
/// expires with the message, and goes with its erasure), and one counter item per month,
/// category and type, `T#{tenant}#USAGE#{month}` / `{category}#{type}`; both in one
/// transaction, so a message counts once.
#[async_trait]
impl relay_core::usage::UsageLedger for DynamoMessageStore {
    async fn record_usage(
        &self,
        tenant: &TenantId,
        month: &str,
        wamid_key: &str,
        pricing: &relay_core::usage::Pricing,
        expires_at: i64,
    ) -> Result<Recorded, StoreError> {
        let mark = Put::builder()
            .table_name(&self.table)
            .item("pk", s(wamid_pk(tenant, wamid_key)))
            .item("sk", s("USAGE"))
            .item("expires_at", n(expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|_| corrupt("put"))?;
        let count = Update::builder()
            .table_name(&self.table)
            .key("pk", s(usage_pk(tenant, month)))
            .key("sk", s(format!("{}#{}", pricing.category, pricing.pricing_type)))
            .update_expression(
                "SET category = :c, pricing_type = :t, expires_at = :never ADD messages :one, billable :b",
            )
            .expression_attribute_values(":c", s(&pricing.category))
            .expression_attribute_values(":t", s(&pricing.pricing_type))
            .expression_attribute_values(":never", n(NEVER))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":b", n(i64::from(pricing.billable)))
            .build()
            .map_err(|_| corrupt("update"))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(mark).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::New),
            Err(e) if condition_failures(&e).first().copied().unwrap_or(false) => {
                Ok(Recorded::Duplicate)
            }
            Err(e) if !condition_failures(&e).is_empty() => Err(StoreError::Unavailable(
                "TransactWriteItems: cancelled by a concurrent write".into(),
            )),
            Err(e) => Err(StoreError::Unavailable(crate::sdk_error(
                "TransactWriteItems",
                &e,
            ))),
        }
    }

    async fn usage(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<relay_core::usage::UsageCount>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .partition(usage_pk(tenant, month), "", i64::MIN)
            .await?
        {
            let count = |k: &str| {
                get_n(&item, k)
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0)
            };
            out.push(relay_core::usage::UsageCount {
                category: get_s(&item, "category").unwrap_or_default().to_owned(),
                pricing_type: get_s(&item, "pricing_type").unwrap_or_default().to_owned(),
                messages: count("messages"),
                billable: count("billable"),
            });
        }
        out.sort_by(|a, b| (&a.category, &a.pricing_type).cmp(&(&b.category, &b.pricing_type)));
        Ok(out)
    }
}
