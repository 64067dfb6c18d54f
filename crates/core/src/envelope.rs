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
    for piece in split(&webhook) {
        let body = make(piece);
        if body.len() > max_bytes {
            return Err(QueueError::TooLarge {
                size: body.len(),
                max: max_bytes,
            });
        }
        out.push(body);
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

fn split_change(change: &Value) -> Vec<Value> {
    let Some(value) = change.get("value").and_then(Value::as_object) else {
        return vec![change.clone()];
    };
    if change.get("field").and_then(Value::as_str) != Some("messages") {
        return vec![change.clone()];
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
    fn a_single_oversized_message_is_refused_not_truncated() {
        let w = big_webhook(2);
        assert!(matches!(
            envelopes("1", 5, w, 800, None),
            Err(QueueError::TooLarge { .. })
        ));
    }
}
