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
use relay_core::ports::{MessageStore, StoreError};
use relay_core::records::*;
use relay_core::webhook::{ApiError, DeliveryStatus};
use std::collections::HashMap;

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
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::New),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(Recorded::Duplicate)
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("PutItem", &e))),
        }
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(set)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
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
            Err(e) => Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
        }
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
            unread: get_n(item, "unread").unwrap_or(0),
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

    async fn get_identity(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<ContactId>, StoreError> {
        match self.get(identity_pk(tenant, key), "ID").await? {
            Some(item) => {
                let c = get_s(&item, "contact_id")
                    .ok_or_else(|| corrupt("identity without contact"))?;
                // Not filtered by expiry: an identity only maps to a contact; a message for an
                // expired contact revives the same pseudonymous id (TTL removes both eventually).
                ContactId::parse(c)
                    .map(Some)
                    .map_err(|_| corrupt("invalid contact id"))
            }
            None => Ok(None),
        }
    }
}

/// For a cancelled transaction, which of its items failed their condition (empty otherwise).
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

#[async_trait]
impl MessageStore for DynamoMessageStore {
    async fn resolve_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
        proposed: &ContactId,
        expires_at: i64,
    ) -> Result<ContactId, StoreError> {
        let mut contact = None;
        for key in identity_keys {
            if let Some(c) = self.get_identity(tenant, key).await? {
                contact = Some(c);
                break;
            }
        }
        let found = contact.is_some();
        let mut contact = contact.unwrap_or_else(|| proposed.clone());
        for (i, key) in identity_keys.iter().enumerate() {
            // if_not_exists makes concurrent twins agree: the first writer's contact wins.
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(identity_pk(tenant, key)))
                .key("sk", s("ID"))
                .update_expression(
                    "SET contact_id = if_not_exists(contact_id, :c), expires_at = :e",
                )
                .expression_attribute_values(":c", s(contact.as_str()))
                .expression_attribute_values(":e", n(expires_at))
                .return_values(ReturnValue::AllNew)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(sdk_error("UpdateItem", &e)))?;
            let winner = out
                .attributes
                .as_ref()
                .and_then(|a| get_s(a, "contact_id"))
                .map(ContactId::parse)
                .transpose()
                .map_err(|_| corrupt("invalid contact id"))?;
            if let Some(w) = winner
                && i == 0
                && !found
            {
                contact = w;
            }
        }
        Ok(contact)
    }

    async fn find_contact(
        &self,
        tenant: &TenantId,
        identity_keys: &[String],
    ) -> Result<Option<ContactId>, StoreError> {
        for key in identity_keys {
            if let Some(c) = self.get_identity(tenant, key).await? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    async fn record_inbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        contact: &ContactUpdate,
    ) -> Result<Recorded, StoreError> {
        let pk = contact_pk(tenant, &message.contact_id);
        let sk = message_sk(message.timestamp, &message.wamid_key);
        let body =
            serde_json::to_string(message).map_err(|_| corrupt("message does not serialise"))?;
        let put_message = Put::builder()
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s(&sk))
            .item("body", s(body))
            .item("expires_at", n(message.expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|_| corrupt("put"))?;
        let put_pointer = Put::builder()
            .table_name(&self.table)
            .item("pk", s(wamid_pk(tenant, &message.wamid_key)))
            .item("sk", s(POINTER))
            .item("msg_pk", s(&pk))
            .item("msg_sk", s(&sk))
            .item("expires_at", n(message.expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|_| corrupt("put"))?;
        let mut set = vec![
            "phone_number_id = :pn",
            "contact_id = :c",
            "expires_at = :e",
            "gsi1pk = :g",
            // A new contact is listed with its window already open: its first message's time
            // is set in the same transaction that makes it visible. (The forward-only updates
            // below move them later; between the two, a reader saw a conversation without a
            // window and refused a reply as "window closed".)
            "last_inbound_at = if_not_exists(last_inbound_at, :ts0)",
            "last_message_at = if_not_exists(last_message_at, :ts0)",
            "gsi1sk = if_not_exists(gsi1sk, :gs0)",
        ];
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(contact_pk(tenant, &contact.contact_id)))
            .key("sk", s(PROFILE))
            .expression_attribute_values(":c", s(contact.contact_id.as_str()))
            .expression_attribute_values(":e", n(contact.expires_at))
            .expression_attribute_values(":g", s(conv_gsi_pk(tenant)))
            .expression_attribute_values(":ts0", n(contact.last_inbound_at))
            .expression_attribute_values(
                ":gs0",
                s(format!(
                    "{:012}#{}",
                    contact.last_inbound_at, contact.contact_id
                )),
            )
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":pn", s(&contact.phone_number_id));
        for (attr, placeholder, value) in [
            ("name", ":name", &contact.name),
            ("wa_id", ":wa", &contact.wa_id),
            ("user_id", ":uid", &contact.user_id),
            ("username", ":un", &contact.username),
        ] {
            if let Some(v) = value {
                update = update.expression_attribute_values(placeholder, s(v));
                set.push(match attr {
                    "name" => "#name = :name",
                    "wa_id" => "wa_id = :wa",
                    "user_id" => "user_id = :uid",
                    _ => "username = :un",
                });
            }
        }
        if contact.name.is_some() {
            update = update.expression_attribute_names("#name", "name");
        }
        let mut add = "ADD unread :one".to_owned();
        if !contact.identity_keys.is_empty() {
            update = update.expression_attribute_values(
                ":ik",
                AttributeValue::Ss(contact.identity_keys.clone()),
            );
            add.push_str(", identity_keys :ik");
        }
        let update = update
            .update_expression(format!("SET {} {add}", set.join(", ")))
            .build()
            .map_err(|_| corrupt("update"))?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put_message).build())
            .transact_items(TransactWriteItem::builder().put(put_pointer).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        let recorded = match result {
            Ok(_) => Recorded::New,
            // A failed condition means "already there" only if the message really is: a
            // transaction cancelled by a concurrent twin must be retried, never taken as done.
            Err(e) if condition_failures(&e).iter().any(|f| *f) => {
                if self.get(pk.clone(), &sk).await?.is_none() {
                    return Err(StoreError::Unavailable(
                        "TransactWriteItems: cancelled by a concurrent write".into(),
                    ));
                }
                Recorded::Duplicate
            }
            Err(e) => return Err(StoreError::Unavailable(sdk_error("TransactWriteItems", &e))),
        };
        // Last activity only moves forward. Done on duplicates too: idempotent, and it completes
        // the work of an attempt that crashed between the transaction and this update.
        let profile_pk = contact_pk(tenant, &contact.contact_id);
        let ts = contact.last_inbound_at;
        let mut v = Item::new();
        v.insert(":ts".into(), n(ts));
        self.update_if(
            profile_pk.clone(),
            PROFILE,
            "SET last_inbound_at = :ts",
            "attribute_not_exists(last_inbound_at) OR last_inbound_at < :ts",
            v.clone(),
        )
        .await?;
        v.insert(":gs".into(), s(format!("{ts:012}#{}", contact.contact_id)));
        self.update_if(
            profile_pk,
            PROFILE,
            "SET last_message_at = :ts, gsi1sk = :gs",
            "attribute_not_exists(last_message_at) OR last_message_at < :ts",
            v,
        )
        .await?;
        Ok(recorded)
    }

    async fn record_status(
        &self,
        tenant: &TenantId,
        status: &StoredStatus,
    ) -> Result<Recorded, StoreError> {
        let pk = wamid_pk(tenant, &status.wamid_key);
        let body =
            serde_json::to_string(status).map_err(|_| corrupt("status does not serialise"))?;
        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        item.insert("sk".into(), s(format!("ST#{}", status.status.as_str())));
        item.insert("body".into(), s(body));
        item.insert("timestamp".into(), n(status.timestamp));
        item.insert("expires_at".into(), n(status.expires_at));
        let recorded = self.put_new(item).await?;
        // Applied on duplicates too (idempotent), for the same reason as in record_inbound.
        if let Some(pointer) = self.get(pk, POINTER).await? {
            let (Some(msg_pk), Some(msg_sk)) =
                (get_s(&pointer, "msg_pk"), get_s(&pointer, "msg_sk"))
            else {
                return Err(corrupt("pointer without target"));
            };
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(msg_pk))
                .key("sk", s(msg_sk))
                .condition_expression("attribute_exists(pk) AND (attribute_not_exists(status_rank) OR status_rank < :r)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":r", n(i64::from(status.status.rank())))
                .expression_attribute_values(":s", s(status.status.as_str()));
            let mut set = "SET status_rank = :r, #status = :s".to_owned();
            if let Some(error) = status.errors.first() {
                request = request
                    .expression_attribute_names("#error", "error")
                    .expression_attribute_values(
                        ":err",
                        s(serde_json::to_string(error).unwrap_or_default()),
                    );
                set.push_str(", #error = :err");
            }
            match request.update_expression(set).send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
            }
        }
        Ok(recorded)
    }

    async fn record_event(
        &self,
        tenant: &TenantId,
        event: &StoredEvent,
    ) -> Result<Recorded, StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s(format!("T#{tenant}#EV")));
        item.insert("sk".into(), s(&event.key));
        item.insert("kind".into(), s(&event.kind));
        item.insert(
            "body".into(),
            s(serde_json::to_string(event).unwrap_or_default()),
        );
        item.insert("expires_at".into(), n(event.expires_at));
        self.put_new(item).await
    }

    async fn quarantine(&self, q: &Quarantined) -> Result<Recorded, StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s("QUARANTINE"));
        item.insert("sk".into(), s(format!("Q#{}", q.key)));
        item.insert("received_at".into(), n(q.received_at));
        item.insert(
            "body".into(),
            s(serde_json::to_string(q).unwrap_or_default()),
        );
        item.insert("expires_at".into(), n(q.expires_at));
        self.put_new(item).await
    }

    async fn list_quarantine(
        &self,
        limit: usize,
        now: i64,
    ) -> Result<Vec<Quarantined>, StoreError> {
        let items = self.partition("QUARANTINE".to_owned(), "Q#", now).await?;
        let mut out: Vec<Quarantined> = bodies(&items, "quarantine")?;
        out.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(a.key.cmp(&b.key)));
        out.truncate(limit);
        Ok(out)
    }

    async fn list_conversations(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<Conversation>, StoreError> {
        let limit = page.limit.max(1);
        let start = match &page.cursor {
            None => None,
            Some(c) => {
                let p = cursor::decode(c, 2).ok_or(StoreError::InvalidCursor)?;
                let ts: i64 = p[0].parse().map_err(|_| StoreError::InvalidCursor)?;
                let contact = ContactId::parse(&p[1]).map_err(|_| StoreError::InvalidCursor)?;
                let mut k = Item::new();
                k.insert("pk".into(), s(contact_pk(tenant, &contact)));
                k.insert("sk".into(), s(PROFILE));
                k.insert("gsi1pk".into(), s(conv_gsi_pk(tenant)));
                k.insert("gsi1sk".into(), s(format!("{ts:012}#{contact}")));
                Some(k)
            }
        };
        let mut values = Item::new();
        values.insert(":g".into(), s(conv_gsi_pk(tenant)));
        let items = self
            .query_live(
                LiveQuery {
                    index: Some("gsi1"),
                    key_condition: "gsi1pk = :g",
                    values,
                    start,
                    forward: false,
                },
                limit + 1,
                now,
            )
            .await?;
        let convs = items
            .iter()
            .map(Self::conversation_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_items(convs, limit, |c| {
            cursor::encode(&[&c.last_message_at.to_string(), c.contact_id.as_str()])
        }))
    }

    async fn conversation(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        match self.get(contact_pk(tenant, contact), PROFILE).await? {
            Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                Ok(Some(Self::conversation_from(&item)?))
            }
            _ => Ok(None),
        }
    }

    async fn list_messages(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        page: &PageRequest,
        now: i64,
    ) -> Result<Page<StoredMessage>, StoreError> {
        let limit = page.limit.max(1);
        let pk = contact_pk(tenant, contact);
        let start = match &page.cursor {
            None => None,
            Some(c) => {
                let p = cursor::decode(c, 2).ok_or(StoreError::InvalidCursor)?;
                let ts: i64 = p[0].parse().map_err(|_| StoreError::InvalidCursor)?;
                if p[1].is_empty() || !p[1].bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StoreError::InvalidCursor);
                }
                let mut k = Item::new();
                k.insert("pk".into(), s(&pk));
                k.insert("sk".into(), s(message_sk(ts, &p[1])));
                Some(k)
            }
        };
        let mut values = Item::new();
        values.insert(":pk".into(), s(&pk));
        values.insert(":m".into(), s("M#"));
        let items = self
            .query_live(
                LiveQuery {
                    index: None,
                    key_condition: "pk = :pk AND begins_with(sk, :m)",
                    values,
                    start,
                    forward: false,
                },
                limit + 1,
                now,
            )
            .await?;
        let msgs = items
            .iter()
            .map(Self::message_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_items(msgs, limit, |m| {
            cursor::encode(&[&m.timestamp.to_string(), &m.wamid_key])
        }))
    }

    async fn message_by_wamid(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let Some(pointer) = self.get(wamid_pk(tenant, wamid_key), POINTER).await? else {
            return Ok(None);
        };
        let (Some(pk), Some(sk)) = (get_s(&pointer, "msg_pk"), get_s(&pointer, "msg_sk")) else {
            return Err(corrupt("pointer without target"));
        };
        match self.get(pk.to_owned(), sk).await? {
            Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                Ok(Some(Self::message_from(&item)?))
            }
            _ => Ok(None),
        }
    }

    async fn contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Option<ContactRecord>, StoreError> {
        match self.get(contact_pk(tenant, contact), PROFILE).await? {
            Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                Ok(Some(ContactRecord {
                    conversation: Self::conversation_from(&item)?,
                    wa_id: get_s(&item, "wa_id").map(str::to_owned),
                    user_id: get_s(&item, "user_id").map(str::to_owned),
                    username: get_s(&item, "username").map(str::to_owned),
                    phone_number_id: get_s(&item, "phone_number_id").map(str::to_owned),
                    send_backoff_until: get_n(&item, "send_backoff_until").unwrap_or(0),
                }))
            }
            _ => Ok(None),
        }
    }

    async fn record_consent(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        entry: &ConsentEntry,
    ) -> Result<Recorded, StoreError> {
        let pk = contact_pk(tenant, contact);
        let mut item = Item::new();
        item.insert("pk".into(), s(&pk));
        // Keyed by the entry's key alone, so an entry is recorded once whatever its time.
        item.insert("sk".into(), s(format!("L#{}", entry.key)));
        item.insert(
            "body".into(),
            s(serde_json::to_string(entry).unwrap_or_default()),
        );
        item.insert("expires_at".into(), n(entry.expires_at));
        let recorded = self.put_new(item).await?;
        if !entry.event.sets_opt_out() {
            return Ok(recorded);
        }
        // The newest entry decides, whatever the arrival order; repeated on duplicates (idempotent).
        let mut v = Item::new();
        v.insert(":at".into(), n(entry.at));
        v.insert(
            ":o".into(),
            AttributeValue::Bool(entry.event == ConsentEvent::OptedOut),
        );
        self.update_if(
            pk,
            PROFILE,
            "SET opted_out = :o, consent_at = :at",
            "attribute_exists(pk) AND (attribute_not_exists(consent_at) OR consent_at <= :at)",
            v,
        )
        .await?;
        Ok(recorded)
    }

    async fn consent_ledger(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
    ) -> Result<Vec<ConsentEntry>, StoreError> {
        let items = self
            .partition(contact_pk(tenant, contact), "L#", now)
            .await?;
        let mut entries: Vec<ConsentEntry> = bodies(&items, "consent")?;
        entries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.key.cmp(&b.key)));
        Ok(entries)
    }

    async fn claim_away_reply(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        now: i64,
        interval: i64,
    ) -> Result<bool, StoreError> {
        let mut v = Item::new();
        v.insert(":now".into(), n(now));
        v.insert(":cut".into(), n(now - interval));
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "SET away_replied_at = :now",
            "attribute_exists(pk) AND (attribute_not_exists(away_replied_at) OR away_replied_at <= :cut)",
            v,
        )
        .await
    }

    async fn clear_unread(&self, tenant: &TenantId, contact: &ContactId) -> Result<(), StoreError> {
        let mut v = Item::new();
        v.insert(":zero".into(), n(0));
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "SET unread = :zero",
            "attribute_exists(pk)",
            v,
        )
        .await
        .map(|_| ())
    }

    async fn set_send_backoff(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        until: i64,
    ) -> Result<(), StoreError> {
        let mut v = Item::new();
        v.insert(":u".into(), n(until));
        self.update_if(
            contact_pk(tenant, contact),
            PROFILE,
            "SET send_backoff_until = :u",
            "attribute_exists(pk) AND (attribute_not_exists(send_backoff_until) OR send_backoff_until < :u)",
            v,
        )
        .await
        .map(|_| ())
    }

    async fn create_outbound(
        &self,
        tenant: &TenantId,
        message: &StoredMessage,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<CreateOutcome, StoreError> {
        let pk = contact_pk(tenant, &message.contact_id);
        let sk = message_sk(message.timestamp, &message.wamid_key);
        let body =
            serde_json::to_string(message).map_err(|_| corrupt("message does not serialise"))?;
        let idem_pk = idempotency.map(|i| format!("T#{tenant}#IDEM#{}", i.key_hash));
        let mut put_message = Put::builder();
        if let Some(idem_pk) = &idem_pk {
            // Erasure deletes the idempotency item through this.
            put_message = put_message.item("idem_pk", s(idem_pk));
        }
        let put_message = put_message
            .table_name(&self.table)
            .item("pk", s(&pk))
            .item("sk", s(&sk))
            .item("body", s(body))
            .item("status", s(DeliveryStatus::Queued.as_str()))
            .item("status_rank", n(0))
            .item("send_lease_until", n(0))
            .item("attempts", n(0))
            .item("expires_at", n(message.expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|_| corrupt("put"))?;
        let put_pointer = Put::builder()
            .table_name(&self.table)
            .item("pk", s(wamid_pk(tenant, &message.wamid_key)))
            .item("sk", s(POINTER))
            .item("msg_pk", s(&pk))
            .item("msg_sk", s(&sk))
            .item("expires_at", n(message.expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|_| corrupt("put"))?;
        let mut tx = self.client.transact_write_items();
        if let (Some(idem), Some(idem_pk)) = (idempotency, &idem_pk) {
            let put_idem = Put::builder()
                .table_name(&self.table)
                .item("pk", s(idem_pk))
                .item("sk", s("IDEM"))
                .item("message_key", s(&message.wamid_key))
                .item("request_hash", s(&idem.request_hash))
                .item("expires_at", n(message.expires_at))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|_| corrupt("put"))?;
            tx = tx.transact_items(TransactWriteItem::builder().put(put_idem).build());
        }
        let result = tx
            .transact_items(TransactWriteItem::builder().put(put_message).build())
            .transact_items(TransactWriteItem::builder().put(put_pointer).build())
            .send()
            .await;
        if let Err(e) = result {
            let reasons = condition_failures(&e);
            if !reasons.iter().any(|r| *r) {
                return Err(StoreError::Unavailable(sdk_error("TransactWriteItems", &e)));
            }
            if let Some(idem_pk) = idem_pk
                && reasons.first() == Some(&true)
                && let Some(item) = self.get(idem_pk, "IDEM").await?
            {
                return Ok(CreateOutcome::Existing {
                    message_key: get_s(&item, "message_key").unwrap_or_default().to_owned(),
                    request_hash: get_s(&item, "request_hash").map(str::to_owned),
                });
            }
            if self.get(pk.clone(), &sk).await?.is_none() {
                return Err(StoreError::Unavailable(
                    "TransactWriteItems: cancelled by a concurrent write".into(),
                ));
            }
            return Ok(CreateOutcome::Existing {
                message_key: message.wamid_key.clone(),
                request_hash: None,
            });
        }
        let mut v = Item::new();
        v.insert(":ts".into(), n(message.timestamp));
        v.insert(
            ":gs".into(),
            s(format!("{:012}#{}", message.timestamp, message.contact_id)),
        );
        self.update_if(
            pk,
            PROFILE,
            "SET last_message_at = :ts, gsi1sk = :gs",
            "attribute_exists(pk) AND (attribute_not_exists(last_message_at) OR last_message_at < :ts)",
            v,
        )
        .await?;
        Ok(CreateOutcome::Created)
    }

    async fn claim_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        now: i64,
        lease_secs: i64,
    ) -> Result<Claim, StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(Claim::Missing);
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(&sk))
            .update_expression("SET send_lease_until = :lease ADD attempts :one")
            .condition_expression(
                "attribute_exists(pk) AND expires_at > :now AND status_rank = :zero AND send_lease_until <= :now",
            )
            .expression_attribute_values(":lease", n(now + lease_secs))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Claim::Claimed {
                attempt: out
                    .attributes
                    .as_ref()
                    .and_then(|a| get_n(a, "attempts"))
                    .unwrap_or(1) as u32,
            }),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                match self.get(pk, &sk).await? {
                    Some(item) if get_n(&item, "expires_at").unwrap_or(0) > now => {
                        if get_n(&item, "status_rank").unwrap_or(0) > 0 {
                            Ok(Claim::Done)
                        } else {
                            Ok(Claim::InFlight)
                        }
                    }
                    _ => Ok(Claim::Missing),
                }
            }
            Err(e) => Err(StoreError::Unavailable(sdk_error("UpdateItem", &e))),
        }
    }

    async fn complete_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        _contact: &ContactId,
        wamid: &str,
        wamid_key: &str,
    ) -> Result<(), StoreError> {
        let Some((pk, sk, expires_at)) = self.locate_with_expiry(tenant, message_key).await? else {
            return Ok(());
        };
        // The pointer first: a status webhook can arrive before this call returns. It expires
        // with the message.
        let mut item = Item::new();
        item.insert("pk".into(), s(wamid_pk(tenant, wamid_key)));
        item.insert("sk".into(), s(POINTER));
        item.insert("msg_pk".into(), s(&pk));
        item.insert("msg_sk".into(), s(&sk));
        item.insert("expires_at".into(), n(expires_at));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_error("PutItem", &e)))?;
        let mut v = Item::new();
        v.insert(":w".into(), s(wamid));
        v.insert(":wk".into(), s(wamid_key));
        v.insert(":zero".into(), n(0));
        self.update_if(
            pk.clone(),
            &sk,
            "SET wamid = :w, sent_key = :wk, send_lease_until = :zero",
            "attribute_exists(pk)",
            v,
        )
        .await?;
        let mut v = Item::new();
        v.insert(":r".into(), n(1));
        v.insert(":s".into(), s(DeliveryStatus::Sent.as_str()));
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression("SET status_rank = :r, #status = :s")
            .condition_expression("attribute_exists(pk) AND status_rank < :r")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(v))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception())
                {
                    Ok(())
                } else {
                    Err(StoreError::Unavailable(sdk_error("UpdateItem", &e)))
                }
            })
    }

    async fn fail_send(
        &self,
        tenant: &TenantId,
        message_key: &str,
        error: &ApiError,
    ) -> Result<(), StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(());
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(
                "SET status_rank = :r, #status = :s, #error = :e, send_lease_until = :zero",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":r", n(i64::from(DeliveryStatus::Failed.rank())))
            .expression_attribute_values(":s", s(DeliveryStatus::Failed.as_str()))
            .expression_attribute_values(":e", s(serde_json::to_string(error).unwrap_or_default()))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception())
                {
                    Ok(())
                } else {
                    Err(StoreError::Unavailable(sdk_error("UpdateItem", &e)))
                }
            })
    }

    async fn release_send(&self, tenant: &TenantId, message_key: &str) -> Result<(), StoreError> {
        let Some((pk, sk)) = self.locate(tenant, message_key).await? else {
            return Ok(());
        };
        let mut v = Item::new();
        v.insert(":zero".into(), n(0));
        self.update_if(
            pk,
            &sk,
            "SET send_lease_until = :zero",
            "attribute_exists(pk)",
            v,
        )
        .await
        .map(|_| ())
    }

    async fn statuses(
        &self,
        tenant: &TenantId,
        wamid_key: &str,
        now: i64,
    ) -> Result<Vec<StoredStatus>, StoreError> {
        let items = self
            .partition(wamid_pk(tenant, wamid_key), "ST#", now)
            .await?;
        let mut out: Vec<StoredStatus> = bodies(&items, "status")?;
        out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.status.cmp(&b.status)));
        Ok(out)
    }

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

    async fn contact_identity_keys(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
    ) -> Result<Vec<String>, StoreError> {
        let profile = self.get(contact_pk(tenant, contact), PROFILE).await?;
        let mut keys = match profile.as_ref().and_then(|p| p.get("identity_keys")) {
            Some(AttributeValue::Ss(keys)) => keys.clone(),
            _ => Vec::new(),
        };
        keys.sort();
        Ok(keys)
    }

    async fn erase_contact(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        identity_keys: &[String],
    ) -> Result<ErasedItems, StoreError> {
        let pk = contact_pk(tenant, contact);
        // Everything in the contact's partition, expired or not.
        let items = self.partition(pk.clone(), "", i64::MIN).await?;
        let mut erased = ErasedItems::default();
        let mut deletes: Vec<(String, String)> = Vec::new();
        let mut identities: Vec<String> = identity_keys.to_vec();
        let mut profile = None;
        for item in &items {
            let sk = get_s(item, "sk").unwrap_or_default().to_owned();
            if sk == PROFILE {
                if let Some(AttributeValue::Ss(keys)) = item.get("identity_keys") {
                    identities.extend(keys.iter().cloned());
                }
                profile = Some(sk);
                continue;
            }
            if sk.starts_with("M#") {
                erased.messages += 1;
                // The row key's partition (pointer, statuses) and the sent wamid's.
                let row_key = sk.rsplit('#').next().unwrap_or_default();
                let mut partitions = vec![wamid_pk(tenant, row_key)];
                if let Some(k) = get_s(item, "sent_key") {
                    partitions.push(wamid_pk(tenant, k));
                }
                for wpk in partitions {
                    for w in self.partition(wpk.clone(), "", i64::MIN).await? {
                        let wsk = get_s(&w, "sk").unwrap_or_default().to_owned();
                        if wsk.starts_with("ST#") {
                            erased.statuses += 1;
                        } else {
                            erased.index_items += 1;
                        }
                        deletes.push((wpk.clone(), wsk));
                    }
                }
                if let Some(idem) = get_s(item, "idem_pk") {
                    if self.get(idem.to_owned(), "IDEM").await?.is_some() {
                        erased.index_items += 1;
                    }
                    deletes.push((idem.to_owned(), "IDEM".to_owned()));
                }
            } else if sk.starts_with("L#") {
                erased.consent_entries += 1;
            } else if let Some(media_id) = sk.strip_prefix("U#") {
                // An uploaded file's record and its pointer.
                erased.index_items += 2;
                deletes.push((wamid_pk(tenant, media_id), POINTER.to_owned()));
            } else {
                erased.index_items += 1;
            }
            deletes.push((pk.clone(), sk));
        }
        identities.sort();
        identities.dedup();
        for key in &identities {
            let ipk = identity_pk(tenant, key);
            if let Some(item) = self.get(ipk.clone(), "ID").await?
                && get_s(&item, "contact_id") == Some(contact.as_str())
            {
                erased.identities += 1;
                deletes.push((ipk, "ID".to_owned()));
            }
        }
        self.delete_all(deletes).await?;
        // The profile last: it names the identities, so a re-run after a crash finds them.
        if let Some(sk) = profile {
            self.delete_all(vec![(pk, sk)]).await?;
            erased.profile = 1;
        }
        Ok(erased)
    }
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
