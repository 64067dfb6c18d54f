//! [`MessageStore`] on one DynamoDB table (single-table design; `docs/data-model.md`).
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | contact | `T#{tenant}#C#{contact}` | `PROFILE` | GSI1: `T#{tenant}#CONV` / `{last_message_at:012}#{contact}` |
//! | message | `T#{tenant}#C#{contact}` | `M#{timestamp:012}#{wamid_key}` | body JSON, `status`, `status_rank`, `error` |
//! | wamid pointer | `T#{tenant}#W#{wamid_key}` | `MSG` | where the message is; the idempotency key |
//! | status | `T#{tenant}#W#{wamid_key}` | `ST#{status}` | one per (message, status) |
//! | identity | `T#{tenant}#I#{identity_key}` | `ID` | BSUID / wa_id hash → contact |
//! | event | `T#{tenant}#EV` | `{key}` | other fields, errors, unusable parts |
//! | quarantine | `QUARANTINE` | `Q#{key}` | events with no tenant |
//!
//! Every item has `expires_at` (Unix seconds), the table's TTL attribute; reads filter on it
//! because TTL deletion lags by up to two days.

use crate::sdk_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use relay_core::ids::{ContactId, TenantId};
use relay_core::ports::StoreError;
use relay_core::ports::{ErasureStore, InboundLog, InboxReads, MediaLedger, OutboundLedger};

use relay_core::records::*;
use relay_core::webhook::{ApiError, DeliveryStatus};
use std::collections::HashMap;

// One file per store role (relay_core::ports).
mod erasure;
mod inbound;
mod inbox;
mod media;
mod notices;
mod outbound;
mod prescriptions;
mod staff;
mod team;
mod templates;
pub use staff::DynamoStaffStore;

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(crate) fn get_n(item: &Item, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn contact_pk(t: &TenantId, c: &ContactId) -> String {
    format!("T#{t}#C#{c}")
}

fn conv_gsi_pk(t: &TenantId) -> String {
    format!("T#{t}#CONV")
}

fn message_sk(ts: i64, wamid_key: &str) -> String {
    format!("M#{ts:012}#{wamid_key}")
}

fn wamid_pk(t: &TenantId, wamid_key: &str) -> String {
    format!("T#{t}#W#{wamid_key}")
}

fn identity_pk(t: &TenantId, key: &str) -> String {
    format!("T#{t}#I#{key}")
}

const PROFILE: &str = "PROFILE";
const POINTER: &str = "MSG";
/// An identity item is kept this much longer than the message that last refreshed it, so the
/// messages of the following day find it fresh and write nothing (one write a day per identity
/// instead of one per message; docs/cost.md). It outlives the contact's data by at most this.
const IDENTITY_SLACK_SECS: i64 = 86_400;

#[derive(Clone, Debug)]
pub struct DynamoMessageStore {
    client: Client,
    table: String,
}

impl DynamoMessageStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoMessageStore {
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

    /// Puts an item unless one with its key exists.
    async fn put_new(&self, item: Item) -> Result<Recorded, StoreError> {
        Ok(if self.put_if(item, "attribute_not_exists(pk)").await? {
            Recorded::New
        } else {
            Recorded::Duplicate
        })
    }

    /// Puts an item if `condition` holds; false if it does not.
    async fn put_if(&self, item: Item, condition: &str) -> Result<bool, StoreError> {
        self.put_if_with(item, condition, Item::new()).await
    }

    /// [`Self::put_if`] with values for the condition's placeholders.
    async fn put_if_with(
        &self,
        item: Item,
        condition: &str,
        values: Item,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("PutItem", &e))),
        }
    }

    /// The pointer `pointer` (an item's `msg_pk`/`msg_sk`, already set) put on its own, if
    /// absent or if it already leads to the same message (an earlier attempt stopped after it);
    /// false if it leads to another message.
    async fn put_pointer(&self, pointer: Item) -> Result<bool, StoreError> {
        let mut same = Item::new();
        for (placeholder, attr) in [(":mp", "msg_pk"), (":ms", "msg_sk")] {
            let v = pointer
                .get(attr)
                .cloned()
                .ok_or_else(|| corrupt("pointer without target"))?;
            same.insert(placeholder.into(), v);
        }
        self.put_if_with(
            pointer,
            "attribute_not_exists(pk) OR (msg_pk = :mp AND msg_sk = :ms)",
            same,
        )
        .await
    }

    /// An update whose condition may fail on purpose (monotonic fields).
    async fn update_if(
        &self,
        pk: String,
        sk: &str,
        set: &str,
        condition: &str,
        values: Item,
    ) -> Result<bool, StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(set)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values));
        send_update_if(request).await
    }

    /// Queries a partition newest-first, skipping expired items, until `want` items or the end.
    /// Returns the items and whether more may follow.
    async fn query_live(
        &self,
        q: LiveQuery<'_>,
        want: usize,
        now: i64,
    ) -> Result<Vec<Item>, StoreError> {
        let LiveQuery {
            index,
            key_condition,
            mut values,
            mut start,
            forward,
        } = q;
        values.insert(":now".into(), n(now));
        let mut out = Vec::new();
        loop {
            let resp = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                .key_condition_expression(key_condition)
                .filter_expression("expires_at > :now")
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(forward)
                .limit((want - out.len()).clamp(1, 1000) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error("Query", &e)))?;
            out.extend(resp.items.unwrap_or_default());
            match resp.last_evaluated_key {
                Some(k) if out.len() < want => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Every live item of one partition whose sort key starts with `prefix`, in key order.
    async fn partition(&self, pk: String, prefix: &str, now: i64) -> Result<Vec<Item>, StoreError> {
        let mut values = Item::new();
        values.insert(":pk".into(), s(pk));
        // DynamoDB refuses an empty begins_with operand: the whole partition then.
        let key_condition = if prefix.is_empty() {
            "pk = :pk"
        } else {
            values.insert(":prefix".into(), s(prefix));
            "pk = :pk AND begins_with(sk, :prefix)"
        };
        let q = LiveQuery {
            index: None,
            key_condition,
            values,
            start: None,
            forward: true,
        };
        self.query_live(q, usize::MAX, now).await
    }

    fn conversation_from(item: &Item) -> Result<Conversation, StoreError> {
        Ok(Conversation {
            contact_id: ContactId::parse(
                get_s(item, "contact_id").ok_or_else(|| corrupt("contact without id"))?,
            )
            .map_err(|_| corrupt("invalid contact id"))?,
            name: get_s(item, "name").map(str::to_owned),
            last_message_at: get_n(item, "last_message_at").unwrap_or(0),
            last_inbound_at: get_n(item, "last_inbound_at"),
            // One mark per unread message (inbound.rs), plus the counter that profiles written
            // before the marks still hold.
            unread: get_n(item, "unread").unwrap_or(0)
                + item
                    .get("unread_ids")
                    .and_then(|v| v.as_ss().ok())
                    .map_or(0, |marks| marks.len() as i64),
            opted_out: item
                .get("opted_out")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
        })
    }

    fn message_from(item: &Item) -> Result<StoredMessage, StoreError> {
        let body = get_s(item, "body").ok_or_else(|| corrupt("message without body"))?;
        let mut m: StoredMessage =
            serde_json::from_str(body).map_err(|_| corrupt("message body is not valid JSON"))?;
        // Status and error live in their own attributes so that updates need not rewrite the body.
        if let Some(status) = get_s(item, "status").and_then(DeliveryStatus::parse) {
            m.status = Some(status);
        }
        if let Some(error) = get_s(item, "error") {
            m.error = serde_json::from_str::<ApiError>(error).ok();
        }
        if let Some(wamid) = get_s(item, "wamid") {
            m.wamid = wamid.to_owned();
        }
        if let Some(media) = get_s(item, "media") {
            m.media = serde_json::from_str(media).ok();
        }
        Ok(m)
    }

    /// Where a message lives, from its pointer (by row key or wamid key).
    async fn locate(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .locate_with_expiry(tenant, key)
            .await?
            .map(|(pk, sk, _)| (pk, sk)))
    }

    /// [`Self::locate`], with the pointer's (= the message's) expiry.
    async fn locate_with_expiry(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        let Some(pointer) = self.get(wamid_pk(tenant, key), POINTER).await? else {
            return Ok(None);
        };
        let expires_at = get_n(&pointer, "expires_at").unwrap_or(0);
        match (get_s(&pointer, "msg_pk"), get_s(&pointer, "msg_sk")) {
            (Some(pk), Some(sk)) => Ok(Some((pk.to_owned(), sk.to_owned(), expires_at))),
            _ => Err(corrupt("pointer without target")),
        }
    }

    /// The contact an identity maps to, and until when the identity item is kept.
    async fn get_identity(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<(ContactId, i64)>, StoreError> {
        match self.get(identity_pk(tenant, key), "ID").await? {
            Some(item) => {
                let c = get_s(&item, "contact_id")
                    .ok_or_else(|| corrupt("identity without contact"))?;
                // Not filtered by expiry: an identity only maps to a contact; a message for an
                // expired contact revives the same pseudonymous id (TTL removes both eventually).
                let contact = ContactId::parse(c).map_err(|_| corrupt("invalid contact id"))?;
                Ok(Some((contact, get_n(&item, "expires_at").unwrap_or(0))))
            }
            None => Ok(None),
        }
    }
}

/// For a cancelled transaction, which of its items failed their condition (empty otherwise).
/// Sends an update whose condition may fail on purpose (monotonic fields, "only if there"):
/// false if it did.
async fn send_update_if(
    request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
) -> Result<bool, StoreError> {
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
    }
}

fn condition_failures<R>(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> Vec<bool> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e.as_service_error() {
        Some(E::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .iter()
            .map(|r| r.code() == Some("ConditionalCheckFailed"))
            .collect(),
        _ => vec![],
    }
}

/// The JSON `body` attribute of each item.
fn bodies<T: serde::de::DeserializeOwned>(
    items: &[Item],
    what: &str,
) -> Result<Vec<T>, StoreError> {
    items
        .iter()
        .map(|i| {
            let body =
                get_s(i, "body").ok_or_else(|| corrupt(&format!("{what} item without body")))?;
            serde_json::from_str(body)
                .map_err(|_| corrupt(&format!("{what} body is not valid JSON")))
        })
        .collect()
}

/// A query of one partition (of the table or an index), filtered to live items.
struct LiveQuery<'a> {
    index: Option<&'a str>,
    key_condition: &'a str,
    values: Item,
    start: Option<Item>,
    /// Oldest first when true.
    forward: bool,
}

fn page_items<T>(mut items: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

impl DynamoMessageStore {
    /// Deletes items by key, 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed.
    async fn delete_all(&self, keys: Vec<(String, String)>) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|(pk, sk)| {
                    DeleteRequest::builder()
                        .key("pk", s(pk))
                        .key("sk", s(sk))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(|_| corrupt("delete request"))
                })
                .collect::<Result<_, _>>()?;
            for attempt in 0..8u32 {
                if requests.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| StoreError::Unavailable(sdk_error("BatchWriteItem", &e)))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
            }
            if !requests.is_empty() {
                return Err(StoreError::Unavailable(
                    "BatchWriteItem: items left unprocessed; run the erasure again".into(),
                ));
            }
        }
        Ok(())
    }
}
