//! The inbound queue's message: a verified webhook with the channel it authenticated as.
//!
//! A webhook larger than the queue takes (Meta allows 3 MB; SQS takes 1 MiB) is split into
//! valid webhooks: first one per change, then one per message/status/error. Nothing is
//! truncated; a single message larger than the queue would be a WhatsApp protocol violation
//! (text ≤ 4096 characters, media by id) and is refused with [`QueueError::TooLarge`].

use crate::crypto::Sealer;
use crate::ids::TenantId;
use crate::ports::QueueError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    /// The channel the request authenticated as (from the webhook URL).
    pub phone_number_id: String,
    /// When the receiver accepted it (Unix milliseconds).
    pub received_at_ms: i64,
    /// The Meta app whose signature the webhook carried, when it came to the app's URL: the
    /// router files it only under a channel of that app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The tenant whose transit key sealed `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// The webhook (or a part of it), as received; sealed (a string, purpose `envelope`)
    /// when `tenant` is set.
    pub payload: Value,
}

/// The purpose a queued webhook is sealed for.
pub const ENVELOPE_PURPOSE: &str = "envelope";

impl Envelope {
    pub fn to_body(&self) -> String {
        // Serialising a Value-holding struct cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Queue bodies for a verified webhook, each at most `max_bytes`, the payload sealed under
/// the tenant's transit key when a sealer is given.
pub fn envelopes(
    phone_number_id: &str,
    received_at_ms: i64,
    webhook: Value,
    max_bytes: usize,
    sealer: Option<(&TenantId, &Sealer)>,
) -> Result<Vec<String>, QueueError> {
    envelopes_from(
        (phone_number_id, None),
        received_at_ms,
        webhook,
        max_bytes,
        sealer,
    )
}

fn envelopes_from(
    (phone_number_id, app): (&str, Option<&str>),
    received_at_ms: i64,
    webhook: Value,
    max_bytes: usize,
    sealer: Option<(&TenantId, &Sealer)>,
) -> Result<Vec<String>, QueueError> {
    let make = |payload: Value| {
        let (tenant, payload) = match sealer {
            Some((tenant, s)) => (
                Some(tenant.clone()),
                Value::String(s.seal(
                    ENVELOPE_PURPOSE,
                    &serde_json::to_vec(&payload).unwrap_or_default(),
                )),
            ),
            None => (None, payload),
        };
        Envelope {
            v: ENVELOPE_VERSION,
            phone_number_id: phone_number_id.to_owned(),
            received_at_ms,
            app: app.map(str::to_owned),
            tenant,
            payload,
        }
        .to_body()
    };
    let whole = make(webhook.clone());
    if whole.len() <= max_bytes {
        return Ok(vec![whole]);
    }
    let mut out = Vec::new();
    // Depth first, in order: a piece still too large is halved where it can be.
    let mut pending: Vec<Value> = split(&webhook).into_iter().rev().collect();
    while let Some(piece) = pending.pop() {
        let body = make(piece.clone());
        if body.len() <= max_bytes {
            out.push(body);
            continue;
        }
        match halve(&piece) {
            Some([first, second]) => {
                pending.push(second);
                pending.push(first);
            }
            None => {
                return Err(QueueError::TooLarge {
                    size: body.len(),
                    max: max_bytes,
                });
            }
        }
    }
    Ok(out)
}

/// A single-thread `history` piece cut into two, each with half the thread's messages (a
/// thread of thousands of messages is larger than a queue message).
fn halve(piece: &Value) -> Option<[Value; 2]> {
    let change = piece.pointer("/entry/0/changes/0")?;
    if change.get("field").and_then(Value::as_str) != Some("history") {
        return None;
    }
    let messages = change
        .pointer("/value/history/0/threads/0/messages")
        .and_then(Value::as_array)?;
    if messages.len() < 2 {
        return None;
    }
    let (a, b) = messages.split_at(messages.len() / 2);
    let with = |part: &[Value]| {
        let mut p = piece.clone();
        if let Some(slot) = p.pointer_mut("/entry/0/changes/0/value/history/0/threads/0/messages") {
            *slot = Value::Array(part.to_vec());
        }
        p
    };
    Some([with(a), with(b)])
}

/// The WhatsApp user a webhook (or a piece of one) is about: whose key seals it on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Bsuid(String),
    WaId(String),
}

impl Owner {
    pub fn identity(&self) -> crate::ids::Identity<'_> {
        match self {
            Owner::Bsuid(v) => crate::ids::Identity::Bsuid(v),
            Owner::WaId(v) => crate::ids::Identity::WaId(v),
        }
    }

    /// The owner of an item with these identities (the BSUID before the number).
    pub fn of(who: &crate::webhook::Identities) -> Option<Owner> {
        who.primary().map(|i| match i {
            crate::ids::Identity::Bsuid(v) => Owner::Bsuid(v.to_owned()),
            crate::ids::Identity::WaId(v) => Owner::WaId(v.to_owned()),
        })
    }

    fn matches(&self, contact: &Value) -> bool {
        let Some(contact) = crate::webhook::parse_contact(contact) else {
            return false;
        };
        match self {
            Owner::Bsuid(v) => contact.user_id.as_ref() == Some(v),
            Owner::WaId(v) => contact.wa_id.as_ref() == Some(v),
        }
    }
}

/// The owner of each item of a `messages` change value (`None` for errors and for items that
/// name nobody): the router's own rule ([`crate::webhook::item_identities`]).
fn item_owners(value: &Value) -> Vec<Option<Owner>> {
    crate::webhook::item_identities(value)
        .into_iter()
        .map(|who| who.as_ref().and_then(Owner::of))
        .collect()
}

/// The owners of a change's items: a `messages` change's per item, a `user_id_update`'s per
/// entry (the customer under their previous BSUID); none for other fields.
fn change_owners(change: &Value) -> Vec<Option<Owner>> {
    let value = change.get("value");
    match (change.get("field").and_then(Value::as_str), value) {
        (Some("messages"), Some(v)) => item_owners(v),
        (Some(field), Some(v)) if crate::webhook::COEXISTENCE_FIELDS.contains(&field) => {
            crate::webhook::coexistence_identities(field, v)
                .unwrap_or_default()
                .iter()
                .map(|who| who.as_ref().and_then(Owner::of))
                .collect()
        }
        (Some("user_preferences"), Some(v)) => crate::webhook::user_preferences(v)
            .iter()
            .map(|u| Owner::of(&u.who))
            .collect(),
        (Some("user_id_update"), Some(v)) => crate::webhook::user_id_updates(v)
            .iter()
            .map(|u| Owner::of(&u.old))
            .collect(),
        _ => Vec::new(),
    }
}

fn changes(webhook: &Value) -> impl Iterator<Item = &Value> {
    webhook
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e.get("changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
}

/// Cuts a webhook so that each piece is about one WhatsApp user at most: the whole webhook if
/// it is about exactly one (the usual case), else one piece per message, status and error,
/// each with only its own user in `contacts`. Pieces about nobody (errors, account updates)
/// have `None`. Each piece is then sealed under its owner's key, so erasing a contact shreds
/// its webhooks on the queues and in the dead-letter queues too.
pub fn pieces_by_owner(webhook: Value) -> Vec<(Option<Owner>, Value)> {
    let mut owners: Vec<Option<Owner>> = Vec::new();
    for change in changes(&webhook) {
        let items = change_owners(change);
        if items.is_empty() {
            owners.push(None);
        }
        owners.extend(items);
    }
    owners.dedup();
    if let [single] = owners.as_slice() {
        return vec![(single.clone(), webhook)];
    }
    split(&webhook)
        .into_iter()
        .map(|mut piece| {
            let owner = changes(&piece)
                .next()
                .and_then(|c| change_owners(c).into_iter().next())
                .flatten();
            keep_contacts_of(&mut piece, owner.as_ref());
            (owner, piece)
        })
        .collect()
}

/// Where a change of a webhook to a Meta app's URL belongs: the number its `metadata` names,
/// else (template, account and other business-account events) the account of its entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addressee {
    Number(String),
    Account(String),
}

fn addressee(entry: &Value, change: &Value) -> Addressee {
    let id = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match id(change.pointer("/value/metadata/phone_number_id")) {
        Some(number) => Addressee::Number(number),
        None => Addressee::Account(id(entry.get("id")).unwrap_or_default()),
    }
}

/// Cuts a webhook to a Meta app's URL (the events of all the app's numbers) into one
/// webhook per addressee, each keeping its entries' ids and its changes in order. A webhook
/// about one addressee (the usual case) is returned whole.
pub fn split_by_addressee(webhook: Value) -> Vec<(Addressee, Value)> {
    let mut order: Vec<Addressee> = Vec::new();
    for entry in webhook
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for change in entry
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let a = addressee(entry, change);
            if !order.contains(&a) {
                order.push(a);
            }
        }
    }
    match order.len() {
        0 => return vec![(Addressee::Account(String::new()), webhook)],
        1 => return vec![(order.remove(0), webhook)],
        _ => {}
    }
    let object = webhook.get("object").cloned().unwrap_or(Value::Null);
    order
        .into_iter()
        .map(|a| {
            let mut entries = Vec::new();
            for entry in webhook
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let changes: Vec<Value> = entry
                    .get("changes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| addressee(entry, c) == a)
                    .cloned()
                    .collect();
                if !changes.is_empty() {
                    let mut e = entry.as_object().cloned().unwrap_or_default();
                    e.insert("changes".into(), Value::Array(changes));
                    entries.push(Value::Object(e));
                }
            }
            (a, json!({"object": object, "entry": entries}))
        })
        .collect()
}

/// Leaves in a single-change piece only the contact entries of `owner` (none without one).
fn keep_contacts_of(piece: &mut Value, owner: Option<&Owner>) {
    let value = piece
        .get_mut("entry")
        .and_then(|e| e.get_mut(0))
        .and_then(|e| e.get_mut("changes"))
        .and_then(|c| c.get_mut(0))
        .and_then(|c| c.get_mut("value"))
        .and_then(Value::as_object_mut);
    let Some(value) = value else { return };
    if let Some(Value::Array(contacts)) = value.get_mut("contacts") {
        contacts.retain(|c| owner.is_some_and(|o| o.matches(c)));
        if contacts.is_empty() {
            value.remove("contacts");
        }
    }
}

/// Queue bodies for pieces of a verified webhook, each sealed by its own sealer and at most
/// `max_bytes`; a piece too large is split further (one per message/status/error). `app`:
/// the Meta app whose URL and signature it came with.
pub fn sealed_envelopes(
    (phone_number_id, app): (&str, Option<&str>),
    received_at_ms: i64,
    tenant: &TenantId,
    pieces: Vec<(Sealer, Value)>,
    max_bytes: usize,
) -> Result<Vec<String>, QueueError> {
    let mut out = Vec::new();
    for (sealer, piece) in pieces {
        let mut bodies = envelopes_from(
            (phone_number_id, app),
            received_at_ms,
            piece,
            max_bytes,
            Some((tenant, &sealer)),
        )?;
        out.append(&mut bodies);
    }
    Ok(out)
}

/// One webhook per message, status and error (and per change for other fields), each keeping
/// its entry id, metadata and contacts.
fn split(webhook: &Value) -> Vec<Value> {
    let object = webhook.get("object").cloned().unwrap_or(Value::Null);
    let entries = webhook
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for entry in entries {
        let changes = entry
            .get("changes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for change in changes {
            for change in split_change(&change) {
                let mut e = entry.as_object().cloned().unwrap_or_default();
                e.insert("changes".into(), Value::Array(vec![change]));
                out.push(json!({ "object": object, "entry": [Value::Object(e)] }));
            }
        }
    }
    out
}

/// A change whose `value[list]` holds one item per piece (echoes, address book entries).
fn split_list(change: &Value, value: &Map<String, Value>, list: &str) -> Vec<Value> {
    let items = value.get(list).and_then(Value::as_array);
    let Some(items) = items.filter(|i| i.len() > 1) else {
        return vec![change.clone()];
    };
    items
        .iter()
        .map(|item| {
            let mut v = value.clone();
            v.insert(list.into(), Value::Array(vec![item.clone()]));
            let mut c = change.as_object().cloned().unwrap_or_default();
            c.insert("value".into(), Value::Object(v));
            Value::Object(c)
        })
        .collect()
}

/// A `history` change cut into one piece per thread, each keeping its chunk's metadata.
fn split_history(change: &Value, value: &Map<String, Value>) -> Vec<Value> {
    let mut out = Vec::new();
    for chunk in value
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let threads = chunk.get("threads").and_then(Value::as_array);
        // A thread without messages holds no event: no piece of its own (it would read as a
        // progress note).
        let with_messages = |t: &&Value| {
            t.get("messages")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty())
        };
        for thread in threads.into_iter().flatten().filter(with_messages) {
            let mut c = chunk.as_object().cloned().unwrap_or_default();
            c.insert("threads".into(), Value::Array(vec![thread.clone()]));
            let mut v = value.clone();
            v.insert("history".into(), Value::Array(vec![Value::Object(c)]));
            let mut ch = change.as_object().cloned().unwrap_or_default();
            ch.insert("value".into(), Value::Object(v));
            out.push(Value::Object(ch));
        }
    }
    if out.is_empty() {
        out.push(change.clone());
    }
    out
}

fn split_change(change: &Value) -> Vec<Value> {
    let Some(value) = change.get("value").and_then(Value::as_object) else {
        return vec![change.clone()];
    };
    match change.get("field").and_then(Value::as_str) {
        Some("messages") => {}
        Some("smb_message_echoes") => return split_list(change, value, "message_echoes"),
        Some("smb_app_state_sync") => return split_list(change, value, "state_sync"),
        Some("history") => return split_history(change, value),
        _ => return vec![change.clone()],
    }
    let lists = ["messages", "statuses", "errors"];
    let mut base: Map<String, Value> = value.clone();
    for l in lists {
        base.remove(l);
    }
    let mut out = Vec::new();
    for l in lists {
        for item in value.get(l).and_then(Value::as_array).into_iter().flatten() {
            let mut v = base.clone();
            v.insert(l.into(), Value::Array(vec![item.clone()]));
            let mut c = change.as_object().cloned().unwrap_or_default();
            c.insert("value".into(), Value::Object(v));
            out.push(Value::Object(c));
        }
    }
    if out.is_empty() {
        out.push(change.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::webhook_from_value;

    fn big_webhook(n: usize) -> Value {
        let messages: Vec<Value> = (0..n)
            .map(|i| json!({"from":"49151","id":format!("wamid.{i}"),"timestamp":"1","type":"text","text":{"body":"x".repeat(1000)}}))
            .collect();
        json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"1"},
             "contacts":[{"wa_id":"49151","profile":{"name":"A"}}],"messages":messages,
             "statuses":[{"id":"wamid.s","status":"sent","timestamp":"2","recipient_id":"49151"}]}},
            {"field":"account_update","value":{"event":"X"}}]}]})
    }

    #[test]
    fn small_webhooks_stay_whole() {
        let w = big_webhook(1);
        let bodies = envelopes("1", 5, w.clone(), 1 << 20, None).unwrap();
        assert_eq!(bodies.len(), 1);
        let e: Envelope = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(e.payload, w);
    }

    #[test]
    fn large_webhooks_split_without_losing_events() {
        let w = big_webhook(20);
        let all = webhook_from_value(w.clone()).unwrap().events();
        let bodies = envelopes("1", 5, w, 4096, None).unwrap();
        assert_eq!(bodies.len(), 22);
        let mut events = Vec::new();
        for b in &bodies {
            assert!(b.len() <= 4096);
            let e: Envelope = serde_json::from_str(b).unwrap();
            events.extend(webhook_from_value(e.payload).unwrap().events());
        }
        assert_eq!(events, all);
    }

    #[test]
    fn a_webhook_about_one_user_stays_whole() {
        let w = big_webhook(3);
        let mut w2 = w.clone();
        w2["entry"][0]["changes"].as_array_mut().unwrap().pop();
        let pieces = pieces_by_owner(w2.clone());
        assert_eq!(pieces, vec![(Some(Owner::WaId("49151".into())), w2)]);
    }

    #[test]
    fn a_webhook_about_several_users_is_cut_per_user_without_their_names() {
        let w = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"metadata":{"phone_number_id":"1"},
             "contacts":[{"wa_id":"49151","profile":{"name":"Anna"}},{"wa_id":"49152","user_id":"DE.b2","profile":{"name":"Bert"}}],
             "messages":[
               {"from":"49151","id":"wamid.a","timestamp":"1","type":"text","text":{"body":"A"}},
               {"from":"49152","from_user_id":"DE.b2","id":"wamid.b","timestamp":"1","type":"text","text":{"body":"B"}}],
             "statuses":[{"id":"wamid.s","status":"read","timestamp":"2","recipient_id":"49153"}],
             "errors":[{"code":131000,"title":"x"}]}},
            {"field":"account_update","value":{"event":"X"}}]}]});
        let all = webhook_from_value(w.clone()).unwrap().events();
        let pieces = pieces_by_owner(w);
        let owners: Vec<Option<Owner>> = pieces.iter().map(|(o, _)| o.clone()).collect();
        assert_eq!(
            owners,
            [
                Some(Owner::WaId("49151".into())),
                Some(Owner::Bsuid("DE.b2".into())),
                Some(Owner::WaId("49153".into())),
                None,
                None
            ]
        );
        let text = |i: usize| pieces[i].1.to_string();
        assert!(text(0).contains("Anna") && !text(0).contains("Bert"));
        assert!(text(1).contains("Bert") && !text(1).contains("Anna"));
        for i in 2..5 {
            assert!(
                !text(i).contains("Anna") && !text(i).contains("Bert"),
                "{i}"
            );
        }
        // Nothing lost: the pieces carry every event, each contact still with its message.
        let mut events = Vec::new();
        for (_, p) in pieces {
            events.extend(webhook_from_value(p).unwrap().events());
        }
        assert_eq!(events.len(), all.len());
        for e in &all {
            assert!(events.contains(e), "{e:?}");
        }
    }

    #[test]
    fn an_app_webhook_is_cut_per_number_and_account_losing_nothing() {
        let msg = |pnid: &str, id: &str| {
            json!({"field":"messages","value":{"metadata":{"phone_number_id":pnid},
            "messages":[{"from":"49151","id":id,"timestamp":"1","type":"text","text":{"body":"x"}}]}})
        };
        let w = json!({"object":"whatsapp_business_account","entry":[
            {"id":"900","changes":[msg("1","wamid.a"), msg("2","wamid.b"),
                {"field":"message_template_status_update","value":{"event":"APPROVED"}}]},
            {"id":"901","changes":[msg("1","wamid.c")]}]});
        let all = webhook_from_value(w.clone()).unwrap().events();
        let parts = split_by_addressee(w);
        let names: Vec<&Addressee> = parts.iter().map(|(a, _)| a).collect();
        assert_eq!(
            names,
            [
                &Addressee::Number("1".into()),
                &Addressee::Number("2".into()),
                &Addressee::Account("900".into())
            ]
        );
        // Number 1's part keeps both entries (their ids) and its two messages.
        assert_eq!(parts[0].1["entry"].as_array().unwrap().len(), 2);
        assert_eq!(parts[0].1["entry"][1]["id"], "901");
        let mut events = Vec::new();
        for (_, p) in parts {
            events.extend(webhook_from_value(p).unwrap().events());
        }
        assert_eq!(events.len(), all.len());
        for e in &all {
            assert!(events.contains(e), "{e:?}");
        }
        let one = json!({"object":"whatsapp_business_account","entry":[{"id":"900","changes":[msg("1","wamid.a")]}]});
        assert_eq!(
            split_by_addressee(one.clone()),
            vec![(Addressee::Number("1".into()), one)]
        );
    }

    #[test]
    fn coexistence_changes_are_cut_per_customer_losing_nothing() {
        // Found by fuzzing: a history chunk with a thread without messages beside one whose
        // second message has no id; and address book entries, one without a contact.
        let history = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"history",
            "value":{"metadata":{"phone_number_id":"1"},"history":[{"metadata":{"phase":0},"threads":[
                {"text":{"body":"x"}},
                {"id":"49151","messages":[
                    {"from":"49151","id":"wamid.H1","timestamp":"1","type":"text","text":{"body":"a"}},
                    {"from":"4930","ie":"wamid.H2","timestamp":"2","type":"text","text":{"body":"b"}}]},
                {"id":"49152","messages":[
                    {"from":"49152","id":"wamid.H3","timestamp":"3","type":"text","text":{"body":"c"}}]}]}]}}]}]});
        let sync = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"smb_app_state_sync",
            "value":{"metadata":{"phone_number_id":"1"},"state_sync":[
                {"type":"contact","action":"add","contact":{"full_name":"A","phone_number":"49151"}},
                {"type":"contact","action":"add"},
                {"type":"contact","action":"add","contact":{"full_name":"B","phone_number":"49152"}}]}}]}]});
        for w in [history, sync] {
            let all = webhook_from_value(w.clone()).unwrap().events();
            let pieces = pieces_by_owner(w);
            assert!(pieces.len() > 1);
            let mut events = Vec::new();
            for (_, p) in pieces {
                events.extend(webhook_from_value(p).unwrap().events());
            }
            assert_eq!(events.len(), all.len(), "{events:?}");
        }
    }

    #[test]
    fn a_single_oversized_message_is_refused_not_truncated() {
        let w = big_webhook(2);
        assert!(matches!(
            envelopes("1", 5, w, 800, None),
            Err(QueueError::TooLarge { .. })
        ));
    }
}
