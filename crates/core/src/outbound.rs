//! Outbound messages: what the pharmacy's software may ask to send, checked against
//! WhatsApp's limits before anything is queued, and the Cloud API request bodies.

use crate::webhook::ApiError;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;

pub const MAX_TEXT: usize = 4096;
pub const MAX_CAPTION: usize = 1024;

/// A reply as the inbox API accepts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyRequest {
    Text {
        text: String,
        #[serde(default)]
        preview_url: bool,
        #[serde(default)]
        reply_to: Option<String>,
    },
    Template {
        template: TemplateSpec,
        #[serde(default)]
        reply_to: Option<String>,
    },
    Interactive {
        interactive: Value,
        #[serde(default)]
        reply_to: Option<String>,
    },
    /// By `link` (an https URL WhatsApp fetches) or `media_id` (a file uploaded with
    /// `POST /v1/media`, sent through 360dialog's media upload at send time).
    Image {
        #[serde(default)]
        link: Option<String>,
        #[serde(default)]
        media_id: Option<String>,
        #[serde(default)]
        caption: Option<String>,
        #[serde(default)]
        reply_to: Option<String>,
    },
    Document {
        #[serde(default)]
        link: Option<String>,
        #[serde(default)]
        media_id: Option<String>,
        #[serde(default)]
        caption: Option<String>,
        #[serde(default)]
        filename: Option<String>,
        #[serde(default)]
        reply_to: Option<String>,
    },
    Audio {
        #[serde(default)]
        link: Option<String>,
        #[serde(default)]
        media_id: Option<String>,
        #[serde(default)]
        reply_to: Option<String>,
    },
}

/// The id prefix of files uploaded through the inbox API.
pub const UPLOAD_PREFIX: &str = "mu_";

/// `{"link": …}` or `{"media_id": …}`, exactly one.
fn media_source(link: Option<String>, media_id: Option<String>) -> Result<Value, InvalidReply> {
    match (link, media_id) {
        (Some(link), None) => {
            https(&link)?;
            Ok(json!({"link": link}))
        }
        (None, Some(id)) => {
            let ok = id.starts_with(UPLOAD_PREFIX)
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(invalid(
                    "invalid-message",
                    "media_id must be an id that POST /v1/media returned",
                ));
            }
            Ok(json!({"media_id": id}))
        }
        _ => Err(invalid(
            "invalid-message",
            "give exactly one of link and media_id",
        )),
    }
}

impl ValidReply {
    /// The uploaded file this reply sends, if it sends one.
    pub fn upload_id(&self) -> Option<&str> {
        self.object.get("media_id").and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub components: Vec<Value>,
}

/// Why a reply cannot be sent as asked; `slug` is the problem type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct InvalidReply {
    pub slug: &'static str,
    pub detail: String,
}

fn invalid(slug: &'static str, detail: impl Into<String>) -> InvalidReply {
    InvalidReply {
        slug,
        detail: detail.into(),
    }
}

/// A checked reply: the WhatsApp `type`, its object (as the Cloud API wants it, and as the
/// relay stores it), and the text to show in the inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReply {
    pub kind: &'static str,
    pub object: Value,
    pub display_text: Option<String>,
    pub reply_to: Option<String>,
    /// Templates may be sent outside the 24-hour window; nothing else may.
    pub is_template: bool,
}

impl ValidReply {
    /// The content as stored with the message: `{"<type>": {...}}`.
    pub fn content(&self) -> Value {
        let mut m = Map::new();
        m.insert(self.kind.to_owned(), self.object.clone());
        Value::Object(m)
    }

    /// A plain text reply (auto-replies: opt-out confirmations, away messages).
    pub fn text(body: &str) -> Self {
        ValidReply {
            kind: "text",
            object: json!({"body": body}),
            display_text: Some(body.to_owned()),
            reply_to: None,
            is_template: false,
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn https(link: &str) -> Result<(), InvalidReply> {
    if link.starts_with("https://") && link.len() <= 2048 && !link.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(invalid("invalid-message", "link must be an https:// URL"))
    }
}

impl ReplyRequest {
    pub fn validate(self) -> Result<ValidReply, InvalidReply> {
        match self {
            ReplyRequest::Text {
                text,
                preview_url,
                reply_to,
            } => {
                if text.trim().is_empty() {
                    return Err(invalid("invalid-message", "text must not be empty"));
                }
                // A token opens the prescription: the patient may send it, the pharmacy never
                // sends one back out over WhatsApp.
                if !crate::erezept::find_in_text(&text).is_empty() {
                    return Err(invalid(
                        "prescription-token",
                        "the text holds an E-Rezept token; tokens are never sent over WhatsApp",
                    ));
                }
                if chars(&text) > MAX_TEXT {
                    return Err(invalid(
                        "text-too-long",
                        format!(
                            "text has {} characters; WhatsApp takes {MAX_TEXT}",
                            chars(&text)
                        ),
                    ));
                }
                Ok(ValidReply {
                    kind: "text",
                    object: json!({"body": text, "preview_url": preview_url}),
                    display_text: Some(text),
                    reply_to,
                    is_template: false,
                })
            }
            ReplyRequest::Template { template, reply_to } => {
                let name_ok = !template.name.is_empty()
                    && template.name.len() <= 512
                    && template
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !name_ok {
                    return Err(invalid(
                        "invalid-message",
                        "template name must be lowercase letters, digits and '_'",
                    ));
                }
                if template.language.is_empty() || template.language.len() > 15 {
                    return Err(invalid(
                        "invalid-message",
                        "template language must be a code like \"de\"",
                    ));
                }
                let mut object =
                    json!({"name": template.name, "language": {"code": template.language}});
                if !template.components.is_empty() {
                    object["components"] = Value::Array(template.components);
                }
                Ok(ValidReply {
                    kind: "template",
                    display_text: Some(format!("[template {}]", template.name)),
                    object,
                    reply_to,
                    is_template: true,
                })
            }
            ReplyRequest::Interactive {
                interactive,
                reply_to,
            } => {
                let display_text = validate_interactive(&interactive)?;
                Ok(ValidReply {
                    kind: "interactive",
                    object: interactive,
                    display_text: Some(display_text),
                    reply_to,
                    is_template: false,
                })
            }
            ReplyRequest::Audio {
                link,
                media_id,
                reply_to,
            } => Ok(ValidReply {
                kind: "audio",
                object: media_source(link, media_id)?,
                display_text: None,
                reply_to,
                is_template: false,
            }),
            ReplyRequest::Image {
                link,
                media_id,
                caption,
                reply_to,
            } => {
                caption_ok(caption.as_deref())?;
                let mut object = media_source(link, media_id)?;
                if let Some(c) = &caption {
                    object["caption"] = json!(c);
                }
                Ok(ValidReply {
                    kind: "image",
                    object,
                    display_text: caption,
                    reply_to,
                    is_template: false,
                })
            }
            ReplyRequest::Document {
                link,
                media_id,
                caption,
                filename,
                reply_to,
            } => {
                caption_ok(caption.as_deref())?;
                let mut object = media_source(link, media_id)?;
                if let Some(c) = &caption {
                    object["caption"] = json!(c);
                }
                if let Some(f) = &filename {
                    if f.is_empty() || f.len() > 240 || f.contains(['/', '\\']) {
                        return Err(invalid(
                            "invalid-message",
                            "filename must be a plain file name",
                        ));
                    }
                    object["filename"] = json!(f);
                }
                Ok(ValidReply {
                    kind: "document",
                    object,
                    display_text: caption,
                    reply_to,
                    is_template: false,
                })
            }
        }
    }
}

fn caption_ok(caption: Option<&str>) -> Result<(), InvalidReply> {
    match caption {
        Some(c) if chars(c) > MAX_CAPTION => Err(invalid(
            "invalid-message",
            format!("caption is longer than {MAX_CAPTION} characters"),
        )),
        _ => Ok(()),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Reply buttons (≤ 3, titles ≤ 20 characters) and lists (≤ 10 rows); returns the body text.
fn validate_interactive(v: &Value) -> Result<String, InvalidReply> {
    let bad = |d: &str| invalid("invalid-interactive", d.to_owned());
    let body =
        str_at(v, &["body", "text"]).ok_or_else(|| bad("interactive.body.text is required"))?;
    if body.trim().is_empty() || chars(body) > 1024 {
        return Err(bad("interactive.body.text must be 1 to 1024 characters"));
    }
    match v.get("type").and_then(Value::as_str) {
        Some("button") => {
            let buttons = v
                .pointer("/action/buttons")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("interactive.action.buttons is required"))?;
            if buttons.is_empty() || buttons.len() > 3 {
                return Err(bad("reply buttons: 1 to 3"));
            }
            let mut ids = std::collections::HashSet::new();
            for b in buttons {
                let id =
                    str_at(b, &["reply", "id"]).ok_or_else(|| bad("each button needs reply.id"))?;
                let title = str_at(b, &["reply", "title"])
                    .ok_or_else(|| bad("each button needs reply.title"))?;
                if str_at(b, &["type"]) != Some("reply") {
                    return Err(bad("button type must be \"reply\""));
                }
                if id.is_empty() || id.len() > 256 || !ids.insert(id) {
                    return Err(bad("button ids must be unique, 1 to 256 characters"));
                }
                if title.trim().is_empty() || chars(title) > 20 {
                    return Err(bad("button titles must be 1 to 20 characters"));
                }
            }
        }
        Some("list") => {
            let label = str_at(v, &["action", "button"])
                .ok_or_else(|| bad("interactive.action.button is required"))?;
            if label.trim().is_empty() || chars(label) > 20 {
                return Err(bad("list button label must be 1 to 20 characters"));
            }
            let sections = v
                .pointer("/action/sections")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("interactive.action.sections is required"))?;
            if sections.is_empty() || sections.len() > 10 {
                return Err(bad("lists have 1 to 10 sections"));
            }
            let mut rows = 0;
            let mut ids = std::collections::HashSet::new();
            for s in sections {
                for r in s
                    .get("rows")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("each section needs rows"))?
                {
                    rows += 1;
                    let id = str_at(r, &["id"]).ok_or_else(|| bad("each row needs an id"))?;
                    let title =
                        str_at(r, &["title"]).ok_or_else(|| bad("each row needs a title"))?;
                    if id.is_empty() || id.len() > 200 || !ids.insert(id) {
                        return Err(bad("row ids must be unique, 1 to 200 characters"));
                    }
                    if title.trim().is_empty() || chars(title) > 24 {
                        return Err(bad("row titles must be 1 to 24 characters"));
                    }
                    if str_at(r, &["description"]).is_some_and(|d| chars(d) > 72) {
                        return Err(bad("row descriptions are at most 72 characters"));
                    }
                }
            }
            if rows == 0 || rows > 10 {
                return Err(bad("lists have 1 to 10 rows in all"));
            }
        }
        _ => return Err(bad("interactive.type must be \"button\" or \"list\"")),
    }
    Ok(body.to_owned())
}

/// A new outbound message as stored before sending: status `queued`, row key `key` (32 hex
/// digits, random or derived), no wamid yet.
pub fn queued_message(
    key: &str,
    contact: &crate::ids::ContactId,
    reply: &ValidReply,
    reply_to_wamid: Option<String>,
    now: i64,
    expires_at: i64,
) -> crate::records::StoredMessage {
    crate::records::StoredMessage {
        id: format!("m_{key}"),
        wamid: String::new(),
        wamid_key: key.to_owned(),
        contact_id: contact.clone(),
        direction: crate::records::Direction::Outbound,
        kind: reply.kind.to_owned(),
        text: reply.display_text.clone(),
        content: reply.content(),
        timestamp: now,
        received_at: now,
        status: Some(crate::webhook::DeliveryStatus::Queued),
        error: None,
        reply_to: reply_to_wamid,
        referral: None,
        media: None,
        origin: None,
        expires_at,
    }
}

/// Who a message goes to: the phone number when known, else the BSUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    WaId(String),
    Bsuid(String),
}

/// The Cloud API `POST /messages` body (360dialog relays it unchanged).
pub fn message_body(
    to: &Recipient,
    kind: &str,
    object: &Value,
    context_wamid: Option<&str>,
) -> Value {
    let mut body =
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "type": kind});
    match to {
        Recipient::WaId(n) => body["to"] = json!(n),
        Recipient::Bsuid(u) => body["recipient"] = json!(u),
    }
    body[kind] = object.clone();
    if let Some(w) = context_wamid {
        body["context"] = json!({"message_id": w});
    }
    body
}

/// The Cloud API body that marks an inbound message (and those before it) as read.
pub fn mark_read_body(wamid: &str, typing: bool) -> Value {
    let mut body = json!({"messaging_product": "whatsapp", "status": "read", "message_id": wamid});
    if typing {
        // Shown to the customer for up to 25 s, or until the reply arrives.
        body["typing_indicator"] = json!({"type": "text"});
    }
    body
}

/// A call to WhatsApp that did not succeed, classified for the sender.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} ({:?})", error.title.as_deref().unwrap_or("send failed"), failure)]
pub struct SendError {
    pub failure: Failure,
    /// What to record with the message: Meta's code and title where there is one.
    pub error: Box<ApiError>,
    /// The provider asked us to wait this long (Retry-After).
    pub retry_after: Option<Duration>,
}

impl SendError {
    pub fn new(failure: Failure, code: i64, title: impl Into<String>) -> Self {
        SendError {
            failure,
            error: Box::new(ApiError {
                code,
                title: Some(title.into()),
                ..ApiError::default()
            }),
            retry_after: None,
        }
    }
}

/// How a failed send should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Try again later with backoff (throughput limits, outages).
    Transient,
    /// Back off for this recipient only (131056, pair rate limit).
    PairRateLimited,
    /// The business is held back for a while (131048 spam rate limit, 131057 account in
    /// maintenance): retry for hours, not seconds, then fail with the reason.
    Held,
    /// Will not succeed: record the reason, do not retry.
    Permanent,
}

/// Meta error codes (domain-facts §5): which are worth a retry.
pub fn classify_meta_code(code: i64) -> Failure {
    match code {
        130429 | 131016 | 131000 | 2 | 4 | 80007 | 133004 => Failure::Transient,
        131056 => Failure::PairRateLimited,
        131048 | 131057 => Failure::Held,
        _ => Failure::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ValidReply, InvalidReply> {
        serde_json::from_value::<ReplyRequest>(v)
            .map_err(|e| invalid("bad", e.to_string()))?
            .validate()
    }

    #[test]
    fn text_limits() {
        assert!(parse(json!({"type":"text","text":"Ihr Rezept liegt bereit."})).is_ok());
        assert_eq!(
            parse(json!({"type":"text","text":"x".repeat(4096)}))
                .unwrap()
                .kind,
            "text"
        );
        assert_eq!(
            parse(json!({"type":"text","text":"ü".repeat(4097)}))
                .unwrap_err()
                .slug,
            "text-too-long"
        );
        assert!(parse(json!({"type":"text","text":"  "})).is_err());
        assert!(
            parse(json!({"type":"text","text":"x","extra":1})).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn interactive_limits() {
        let b = |n: usize, title: &str| {
            let buttons: Vec<Value> = (0..n)
                .map(|i| json!({"type":"reply","reply":{"id":format!("b{i}"),"title":title}}))
                .collect();
            json!({"type":"interactive","interactive":{"type":"button","body":{"text":"Abholen?"},"action":{"buttons":buttons}}})
        };
        assert!(parse(b(3, "Heute abholen")).is_ok());
        assert_eq!(parse(b(4, "Ja")).unwrap_err().slug, "invalid-interactive");
        assert!(parse(b(0, "Ja")).is_err());
        assert!(
            parse(b(1, "Ein sehr langer Titel!")).is_err(),
            "21 characters"
        );
        let rows: Vec<Value> = (0..11)
            .map(|i| json!({"id":format!("r{i}"),"title":"Slot"}))
            .collect();
        let list = |rows: Vec<Value>| {
            json!({"type":"interactive","interactive":{"type":"list","body":{"text":"Wann?"},
            "action":{"button":"Zeiten","sections":[{"title":"Fr","rows":rows}]}}})
        };
        assert!(parse(list(rows[..10].to_vec())).is_ok());
        assert!(parse(list(rows)).is_err(), "11 rows");
        assert!(
            parse(
                json!({"type":"interactive","interactive":{"type":"product","body":{"text":"x"}}})
            )
            .is_err()
        );
    }

    #[test]
    fn templates_media_and_bodies() {
        let t = parse(json!({"type":"template","template":{"name":"abholbereit","language":"de","components":[{"type":"body","parameters":[]}]}})).unwrap();
        assert!(t.is_template);
        assert_eq!(t.object["language"]["code"], "de");
        assert!(
            parse(json!({"type":"template","template":{"name":"Bad Name","language":"de"}}))
                .is_err()
        );
        assert!(parse(json!({"type":"image","link":"http://insecure.example/x.jpg"})).is_err());
        assert!(parse(json!({"type":"image"})).is_err(), "link or media_id");
        assert!(
            parse(json!({"type":"image","link":"https://x.example/a.jpg","media_id":"mu_1"}))
                .is_err(),
            "not both"
        );
        assert!(parse(json!({"type":"image","media_id":"md_../x"})).is_err());
        let up = parse(json!({"type":"audio","media_id":"mu_abc123"})).unwrap();
        assert_eq!(up.kind, "audio");
        assert_eq!(up.upload_id(), Some("mu_abc123"));
        let d = parse(json!({"type":"document","link":"https://x.example/plan.pdf","filename":"plan.pdf","reply_to":"m_1"})).unwrap();
        let body = message_body(
            &Recipient::WaId("4915100000000".into()),
            d.kind,
            &d.object,
            Some("wamid.X"),
        );
        assert_eq!(body["to"], "4915100000000");
        assert_eq!(body["document"]["filename"], "plan.pdf");
        assert_eq!(body["context"]["message_id"], "wamid.X");
        let body = message_body(
            &Recipient::Bsuid("DE.1".into()),
            "text",
            &json!({"body":"x"}),
            None,
        );
        assert_eq!(body["recipient"], "DE.1");
        assert!(body.get("to").is_none());
        assert_eq!(mark_read_body("wamid.Y", false)["status"], "read");
        assert!(
            mark_read_body("wamid.Y", false)
                .get("typing_indicator")
                .is_none()
        );
        assert_eq!(
            mark_read_body("wamid.Y", true)["typing_indicator"],
            json!({"type": "text"})
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(classify_meta_code(130429), Failure::Transient);
        assert_eq!(classify_meta_code(131056), Failure::PairRateLimited);
        assert_eq!(classify_meta_code(131048), Failure::Held);
        assert_eq!(classify_meta_code(131057), Failure::Held);
        for permanent in [131047, 131026, 131050, 131051, 368] {
            assert_eq!(
                classify_meta_code(permanent),
                Failure::Permanent,
                "{permanent}"
            );
        }
    }
}
