//! [`StaffStore`] on the relay's table.
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | account | `T#{tenant}#STAFF` | `{staff_id}` | `body`: the account as JSON |
//! | email pointer | `STAFFEMAIL#{sha256(email)}` | `STAFF` | tenant and id; makes emails unique |
//! | session | `STAFFSESSION#{token_hash}` | `SESSION` | `body`; `expires_at` = idle deadline (TTL) |
//! | sign-in failures | `SIGNIN#{key}` | `{bucket}` | `failures` (ADD) |

use super::{Item, condition_failures, get_n, get_s, n, s};
use crate::sdk_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue, TransactWriteItem};
use relay_core::ids::TenantId;
use relay_core::ports::StoreError;
use relay_core::staff::{StaffAccount, StaffSession, StaffStore, token_digest};

#[derive(Clone, Debug)]
pub struct DynamoStaffStore {
    client: Client,
    table: String,
}

impl DynamoStaffStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStaffStore {
            client,
            table: table.into(),
        }
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("GetItem", &e)))?;
        Ok(out.item)
    }
}

fn account_pk(tenant: &TenantId) -> String {
    format!("T#{tenant}#STAFF")
}

fn email_pk(email: &str) -> String {
    format!("STAFFEMAIL#{}", token_digest(email))
}

fn session_pk(token_hash: &str) -> String {
    format!("STAFFSESSION#{token_hash}")
}

fn body<T: serde::de::DeserializeOwned>(item: &Item, what: &str) -> Result<T, StoreError> {
    get_s(item, "body")
        .and_then(|b| serde_json::from_str(b).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("{what} item has no readable body")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl StaffStore for DynamoStaffStore {
    async fn add_staff(&self, a: &StaffAccount) -> Result<bool, StoreError> {
        let pointer = Put::builder()
            .table_name(&self.table)
            .item("pk", s(email_pk(&a.email)))
            .item("sk", s("STAFF"))
            .item("tenant", s(a.tenant.as_str()))
            .item("staff_id", s(&a.id))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let account = Put::builder()
            .table_name(&self.table)
            .item("pk", s(account_pk(&a.tenant)))
            .item("sk", s(&a.id))
            .item("body", s(json(a)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(pointer).build())
            .transact_items(TransactWriteItem::builder().put(account).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if condition_failures(&e).iter().any(|f| *f) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(sdk_error("TransactWriteItems", &e))),
        }
    }

    async fn staff_by_email(&self, email: &str) -> Result<Option<StaffAccount>, StoreError> {
        let Some(pointer) = self.get(email_pk(email), "STAFF").await? else {
            return Ok(None);
        };
        let (Some(tenant), Some(id)) = (get_s(&pointer, "tenant"), get_s(&pointer, "staff_id"))
        else {
            return Err(StoreError::Corrupt("staff email pointer".into()));
        };
        let tenant =
            TenantId::parse(tenant).map_err(|_| StoreError::Corrupt("staff tenant".into()))?;
        Ok(self.staff(&tenant, id).await?.filter(|a| a.email == email))
    }

    async fn staff(&self, tenant: &TenantId, id: &str) -> Result<Option<StaffAccount>, StoreError> {
        match self.get(account_pk(tenant), id).await? {
            Some(item) => Ok(Some(body(&item, "staff")?)),
            None => Ok(None),
        }
    }

    async fn list_staff(&self, tenant: &TenantId) -> Result<Vec<StaffAccount>, StoreError> {
        let mut out: Vec<StaffAccount> = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(account_pk(tenant)))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error("Query", &e)))?;
            for item in page.items() {
                out.push(body(item, "staff")?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(out)
    }

    async fn set_password(
        &self,
        tenant: &TenantId,
        id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(mut account) = self.staff(tenant, id).await? else {
            return Ok(false);
        };
        account.password_hash = password_hash.to_owned();
        account.sessions_valid_after = now;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(account_pk(tenant)))
            .item("sk", s(id))
            .item("body", s(json(&account)?))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await
            .map(|_| true)
            .or_else(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception())
                {
                    Ok(false)
                } else {
                    Err(StoreError::Unavailable(sdk_error("PutItem", &e)))
                }
            })
    }

    async fn remove_staff(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        let Some(account) = self.staff(tenant, id).await? else {
            return Ok(false);
        };
        let delete = |pk: String, sk: &str| {
            Delete::builder()
                .table_name(&self.table)
                .key("pk", s(pk))
                .key("sk", s(sk))
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        self.client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .delete(delete(account_pk(tenant), id)?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .delete(delete(email_pk(&account.email), "STAFF")?)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("TransactWriteItems", &e)))?;
        // Its sessions stay until their TTL, unusable: every request checks the account.
        Ok(true)
    }

    async fn create_session(&self, session: &StaffSession) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(session_pk(&session.token_hash)))
            .item("sk", s("SESSION"))
            .item("body", s(json(session)?))
            .item("expires_at", n(session.expires_at))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("PutItem", &e)))?;
        Ok(())
    }

    async fn session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<StaffSession>, StoreError> {
        let Some(item) = self.get(session_pk(token_hash), "SESSION").await? else {
            return Ok(None);
        };
        // TTL deletion lags: the deadline is the item's `expires_at`, which touch moves.
        let expires_at = get_n(&item, "expires_at").unwrap_or(0);
        if expires_at <= now {
            return Ok(None);
        }
        let mut session: StaffSession = body(&item, "session")?;
        session.expires_at = expires_at;
        session.last_seen = get_n(&item, "last_seen").unwrap_or(session.last_seen);
        Ok(Some(session))
    }

    async fn touch_session(
        &self,
        token_hash: &str,
        last_seen: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(session_pk(token_hash)))
            .key("sk", s("SESSION"))
            .update_expression("SET expires_at = :e, last_seen = :l")
            .condition_expression("attribute_exists(pk) AND expires_at < :e")
            .expression_attribute_values(":e", n(expires_at))
            .expression_attribute_values(":l", n(last_seen))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Ended, or already moved further: nothing to do.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
        }
    }

    async fn end_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(session_pk(token_hash)))
            .key("sk", s("SESSION"))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("DeleteItem", &e)))?;
        Ok(())
    }

    async fn add_sign_in_failure(
        &self,
        key: &str,
        bucket: i64,
        expires_at: i64,
    ) -> Result<u32, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("SIGNIN#{key}")))
            .key("sk", s(bucket.to_string()))
            .update_expression("ADD failures :one SET expires_at = :e")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":e", n(expires_at))
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

    async fn sign_in_failures(&self, key: &str, bucket: i64) -> Result<u32, StoreError> {
        Ok(self
            .get(format!("SIGNIN#{key}"), &bucket.to_string())
            .await?
            .and_then(|i| get_n(&i, "failures"))
            .unwrap_or(0) as u32)
    }
}
