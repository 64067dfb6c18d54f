//! The WhatsApp Cloud API webhook as 360dialog relays it (unchanged from Meta), and its
//! flattening into one domain [`Event`] per message, status, error or other change.
//!
//! Parsing is lenient where WhatsApp evolves (new message types, new fields, new `field`
//! values are kept as raw JSON) and strict only where the relay cannot work without a value
//! (a message without an `id` cannot be de-duplicated, so it becomes [`Event::Unrecognized`]).
//! Nothing here panics on any input; a property test checks that.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The envelope every webhook POST has: `{"object": "whatsapp_business_account", "entry": [...]}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Webhook {
    pub object: String,
    pub entry: Vec<Entry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Entry {
    /// The WhatsApp Business Account id.
    #[serde(default, deserialize_with = "string_or_number")]
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Change {
    pub field: String,
    #[serde(default)]
    pub value: Value,
}

/// Why a body is not a WhatsApp webhook. The messages never contain payload content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("JSON is not a WhatsApp webhook: {0}")]
    NotWebhook(&'static str),
}

pub const WEBHOOK_OBJECT: &str = "whatsapp_business_account";

/// Parses and shape-checks a webhook body. Used by the receiver (to refuse junk with 400)
/// and by the router.
pub fn parse_webhook(body: &[u8]) -> Result<Webhook, PayloadError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError::NotJson {
        line: e.line(),
        column: e.column(),
    })?;
    webhook_from_value(value)
}

pub fn webhook_from_value(value: Value) -> Result<Webhook, PayloadError> {
    check_webhook_shape(&value)?;
    serde_json::from_value(value)
        .map_err(|_| PayloadError::NotWebhook("an entry or change has the wrong shape"))
}

/// Checks that a JSON value is a webhook without taking it apart (the receiver's check).
/// Walks the entries and changes in place (the receiver's hot path copies nothing).
pub fn validate_webhook(value: &Value) -> Result<(), PayloadError> {
    check_webhook_shape(value)?;
    let bad = PayloadError::NotWebhook("an entry or change has the wrong shape");
    for entry in value["entry"].as_array().into_iter().flatten() {
        let Value::Object(entry) = entry else {
            return Err(bad);
        };
        let field_is_string = |c: &Value| c.get("field").is_some_and(Value::is_string);
        match entry.get("changes") {
            None => {}
            Some(Value::Array(changes)) if changes.iter().all(field_is_string) => {}
            Some(_) => return Err(bad),
        }
    }
    Ok(())
}

fn check_webhook_shape(value: &Value) -> Result<(), PayloadError> {
    let Value::Object(map) = value else {
        return Err(PayloadError::NotWebhook("top level is not an object"));
    };
    match map.get("object") {
        Some(Value::String(s)) if s == WEBHOOK_OBJECT => {}
        Some(_) => {
            return Err(PayloadError::NotWebhook(
                "`object` is not \"whatsapp_business_account\"",
            ));
        }
        None => return Err(PayloadError::NotWebhook("`object` is missing")),
    }
    match map.get("entry") {
        Some(Value::Array(_)) => Ok(()),
        Some(_) => Err(PayloadError::NotWebhook("`entry` is not an array")),
        None => Err(PayloadError::NotWebhook("`entry` is missing")),
    }
}

// ---------------------------------------------------------------------------------------------
// The `value` of a `messages` change.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Metadata {
    #[serde(default)]
    pub display_phone_number: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub phone_number_id: String,
}

/// A WhatsApp user as the webhook describes them. From 2026 `wa_id` may be absent when the
/// user hides their number; `user_id` is the business-scoped user id (BSUID).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Contact {
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub wa_id: Option<String>,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub user_id: Option<String>,
    /// The parent BSUID: the same user across the accounts of a business portfolio (sent
    /// when the business enabled parent BSUIDs).
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub parent_user_id: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
    #[serde(default)]
    pub identity_key_hash: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Profile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// Meta's error object as it appears in `errors[]` of messages, statuses and values.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ApiError {
    #[serde(default)]
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequently_forwarded: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Media {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Audio only: `true` for a voice note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animated: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Location {
    #[serde(default)]
    pub latitude: f64,
    #[serde(default)]
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Interactive {
    ButtonReply {
        button_reply: Choice,
    },
    ListReply {
        list_reply: Choice,
    },
    /// WhatsApp Flows answer; `response_json` is a JSON string chosen by the Flow.
    NfmReply {
        nfm_reply: Value,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Choice {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Button {
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Reaction {
    #[serde(default)]
    pub message_id: String,
    /// Absent when the user removed their reaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct System {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Text {
    #[serde(default)]
    pub body: String,
}

/// What a message carries, by `type`. Serialises as WhatsApp does: `{"image": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text(Text),
    Image(Media),
    Video(Media),
    Audio(Media),
    Sticker(Media),
    Document(Media),
    Location(Location),
    /// vCard-like cards; kept as WhatsApp sends them.
    Contacts(Vec<Value>),
    Interactive(Interactive),
    Button(Button),
    Reaction(Reaction),
    Order(Value),
    System(System),
    /// WhatsApp could not show the message to us; the reason is in the message's `errors`.
    Unsupported(Value),
    /// A type this relay does not know (yet), or a known type whose body had the wrong shape:
    /// the whole message as received.
    Unknown(Value),
}

/// The `system` message types that announce a customer's new identity.
pub const IDENTITY_CHANGES: &[&str] = &[
    "user_changed_number",
    "user_changed_user_id",
    "customer_identity_changed",
];

impl Content {
    /// A `system` message announcing that the customer changed number or BSUID.
    pub fn identity_change(&self) -> Option<&System> {
        match self {
            Content::System(s)
                if s.kind
                    .as_deref()
                    .is_some_and(|k| IDENTITY_CHANGES.contains(&k)) =>
            {
                Some(s)
            }
            _ => None,
        }
    }

    /// The file of an image, video, audio, sticker or document message.
    pub fn media(&self) -> Option<&Media> {
        match self {
            Content::Image(m)
            | Content::Video(m)
            | Content::Document(m)
            | Content::Audio(m)
            | Content::Sticker(m) => Some(m),
            _ => None,
        }
    }

    /// The text a person reads: a text body, a caption, a button title, a reaction emoji.
    pub fn display_text(&self) -> Option<&str> {
        match self {
            Content::Text(t) => Some(&t.body),
            Content::Image(m)
            | Content::Video(m)
            | Content::Document(m)
            | Content::Audio(m)
            | Content::Sticker(m) => m.caption.as_deref(),
            Content::Interactive(Interactive::ButtonReply { button_reply: c })
            | Content::Interactive(Interactive::ListReply { list_reply: c }) => Some(&c.title),
            Content::Button(b) => Some(&b.text),
            Content::Reaction(r) => r.emoji.as_deref(),
            Content::System(s) => s.body.as_deref(),
            Content::Location(l) => l.name.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `wamid.…`, the idempotency key.
    pub id: String,
    pub from: Option<String>,
    pub from_user_id: Option<String>,
    /// Meta's Unix seconds (it drives ordering and the 24-hour window).
    pub timestamp: i64,
    /// The `type` exactly as received (also for unknown types).
    pub kind: String,
    pub content: Content,
    pub context: Option<Context>,
    pub referral: Option<Value>,
    pub errors: Vec<ApiError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Sent,
    Delivered,
    Read,
    Played,
    Failed,
}

impl DeliveryStatus {
    /// Statuses only move forward; `failed` is terminal for the attempt.
    pub fn rank(self) -> u8 {
        match self {
            DeliveryStatus::Queued => 0,
            DeliveryStatus::Sent => 1,
            DeliveryStatus::Delivered => 2,
            DeliveryStatus::Read => 3,
            DeliveryStatus::Played => 4,
            DeliveryStatus::Failed => 9,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Played => "played",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => DeliveryStatus::Queued,
            "sent" => DeliveryStatus::Sent,
            "delivered" => DeliveryStatus::Delivered,
            "read" => DeliveryStatus::Read,
            "played" => DeliveryStatus::Played,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The wamid of *our* outbound message.
    pub id: String,
    pub status: DeliveryStatus,
    pub timestamp: i64,
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    /// The recipient's parent BSUID, when parent BSUIDs are enabled.
    pub recipient_parent_user_id: Option<String>,
    pub conversation: Option<Value>,
    pub pricing: Option<Value>,
    pub errors: Vec<ApiError>,
}

/// Where a message of the conversation came from when the customer did not just send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Sent by the pharmacy with the WhatsApp Business app on the same number (coexistence).
    BusinessApp,
    /// Imported from the Business app's chat history when the number joined the API.
    History,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::BusinessApp => "business_app",
            Origin::History => "history",
        }
    }
}

/// A message of a customer's conversation that did not come through `messages`: an echo of
/// one the pharmacy sent from the Business app, or one of the imported history.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    /// The customer whose conversation it belongs to.
    pub customer: Identities,
    /// Sent by the business (else written by the customer, in the history).
    pub from_business: bool,
    pub origin: Origin,
    pub message: Message,
    /// The history's delivery state of a business message (`history_context.status`).
    pub status: Option<DeliveryStatus>,
}

/// One thing that happened, as the router handles it.
// Events live briefly in one Vec per webhook; boxing the message would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Message {
        waba_id: String,
        metadata: Metadata,
        contact: Option<Contact>,
        message: Message,
    },
    Status {
        waba_id: String,
        metadata: Metadata,
        status: Status,
    },
    /// An entry of `value.errors[]`: a problem on the business side, not tied to a message.
    Error {
        waba_id: String,
        metadata: Metadata,
        error: ApiError,
    },
    /// A message sent from the Business app, or one of the imported chat history.
    Echo {
        waba_id: String,
        metadata: Metadata,
        echo: Echo,
    },
    /// The Business app's address book (`smb_app_state_sync`): a customer's name.
    ContactSync {
        waba_id: String,
        metadata: Metadata,
        customer: Identities,
        name: Option<String>,
        removed: bool,
    },
    /// Any other `field` (template status, account updates, user preferences, calls …).
    Other {
        waba_id: String,
        field: String,
        value: Value,
    },
    /// Part of a `messages` change the relay cannot use as a message or status (no id, a
    /// status word it does not know …). Kept raw, never dropped.
    Unrecognized {
        waba_id: String,
        metadata: Metadata,
        reason: &'static str,
        raw: Value,
    },
}

impl Event {
    /// The phone number id the event is addressed to, when the payload says.
    pub fn phone_number_id(&self) -> Option<&str> {
        match self {
            Event::Message { metadata, .. }
            | Event::Status { metadata, .. }
            | Event::Error { metadata, .. }
            | Event::Echo { metadata, .. }
            | Event::ContactSync { metadata, .. }
            | Event::Unrecognized { metadata, .. } => {
                Some(metadata.phone_number_id.as_str()).filter(|s| !s.is_empty())
            }
            Event::Other { .. } => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Message { .. } => "message",
            Event::Status { .. } => "status",
            Event::Error { .. } => "error",
            Event::Echo { .. } => "echo",
            Event::ContactSync { .. } => "contact_sync",
            Event::Other { .. } => "other",
            Event::Unrecognized { .. } => "unrecognized",
        }
    }
}

#[derive(Deserialize, Default)]
struct MessagesValue {
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    contacts: Option<Value>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    statuses: Option<Value>,
    #[serde(default)]
    errors: Option<Value>,
}

impl Webhook {
    /// Every event in the webhook, across all entries and changes, in payload order.
    pub fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for entry in &self.entry {
            for change in &entry.changes {
                change_events(&entry.id, change, &mut out);
            }
        }
        out
    }
}

fn array(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

fn metadata_of(value: &Value) -> Metadata {
    value
        .get("metadata")
        .cloned()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default()
}

/// The items of a coexistence change (`smb_message_echoes`, `history`, `smb_app_state_sync`):
/// `None` when the change has none (a history progress note, a declined share).
fn coexistence_events(waba_id: &str, change: &Change) -> Option<Vec<Event>> {
    let value = &change.value;
    let metadata = metadata_of(value);
    let mut out = Vec::new();
    let unrecognized = |raw: &Value, reason| Event::Unrecognized {
        waba_id: waba_id.to_owned(),
        metadata: metadata.clone(),
        reason,
        raw: raw.clone(),
    };
    match change.field.as_str() {
        "smb_message_echoes" => {
            for raw in array(value.get("message_echoes")) {
                let customer = Identities {
                    bsuid: str_field(raw, "to_user_id"),
                    wa_id: str_field(raw, "to"),
                };
                match parse_message(raw) {
                    Some(message) if customer.primary().is_some() => out.push(Event::Echo {
                        waba_id: waba_id.to_owned(),
                        metadata: metadata.clone(),
                        echo: Echo {
                            customer,
                            from_business: true,
                            origin: Origin::BusinessApp,
                            message,
                            status: None,
                        },
                    }),
                    _ => out.push(unrecognized(raw, "message echo without id or recipient")),
                }
            }
        }
        "history" => {
            for chunk in array(value.get("history")) {
                for thread in array(chunk.get("threads")) {
                    let customer = Identities {
                        bsuid: str_field(thread, "user_id"),
                        wa_id: str_field(thread, "id"),
                    };
                    for raw in array(thread.get("messages")) {
                        let Some(message) =
                            parse_message(raw).filter(|_| customer.primary().is_some())
                        else {
                            out.push(unrecognized(raw, "history message without id or thread"));
                            continue;
                        };
                        let by_customer = (message.from.is_some()
                            && message.from == customer.wa_id)
                            || (message.from_user_id.is_some()
                                && message.from_user_id == customer.bsuid);
                        let status = raw
                            .pointer("/history_context/status")
                            .and_then(Value::as_str)
                            .and_then(|s| DeliveryStatus::parse(&s.to_ascii_lowercase()));
                        out.push(Event::Echo {
                            waba_id: waba_id.to_owned(),
                            metadata: metadata.clone(),
                            echo: Echo {
                                customer: customer.clone(),
                                from_business: !by_customer,
                                origin: Origin::History,
                                message,
                                status,
                            },
                        });
                    }
                }
            }
        }
        "smb_app_state_sync" => {
            for raw in array(value.get("state_sync")) {
                let Some(contact) = raw.get("contact") else {
                    out.push(unrecognized(raw, "address book entry without a contact"));
                    continue;
                };
                let customer = Identities {
                    bsuid: str_field(contact, "user_id"),
                    wa_id: str_field(contact, "phone_number"),
                };
                if customer.primary().is_none() {
                    out.push(unrecognized(raw, "address book entry without a number"));
                    continue;
                }
                out.push(Event::ContactSync {
                    waba_id: waba_id.to_owned(),
                    metadata: metadata.clone(),
                    customer,
                    name: str_field(contact, "full_name")
                        .or_else(|| str_field(contact, "first_name")),
                    removed: str_field(raw, "action").as_deref() == Some("remove"),
                });
            }
        }
        _ => return None,
    }
    (!out.is_empty()).then_some(out)
}

/// The coexistence fields, whose items each belong to one customer.
pub const COEXISTENCE_FIELDS: &[&str] = &["smb_message_echoes", "history", "smb_app_state_sync"];

/// The owner of each item of a coexistence change, in the order [`Webhook::events`] gives
/// them (`None` for items the router cannot use); `None` for other fields.
pub fn coexistence_identities(field: &str, value: &Value) -> Option<Vec<Option<Identities>>> {
    if !COEXISTENCE_FIELDS.contains(&field) {
        return None;
    }
    let change = Change {
        field: field.to_owned(),
        value: value.clone(),
    };
    Some(
        coexistence_events("", &change)
            .unwrap_or_default()
            .into_iter()
            .map(|e| match e {
                Event::Echo { echo, .. } => Some(echo.customer),
                Event::ContactSync { customer, .. } => Some(customer),
                _ => None,
            })
            .collect(),
    )
}

fn change_events(waba_id: &str, change: &Change, out: &mut Vec<Event>) {
    if let Some(mut events) = coexistence_events(waba_id, change) {
        out.append(&mut events);
        return;
    }
    if change.field != "messages" {
        out.push(Event::Other {
            waba_id: waba_id.to_owned(),
            field: change.field.clone(),
            value: change.value.clone(),
        });
        return;
    }
    let value: MessagesValue = serde_json::from_value(change.value.clone()).unwrap_or_default();
    let metadata: Metadata = value
        .metadata
        .clone()
        .and_then(|m| serde_json::from_value(m).ok())
        .unwrap_or_default();
    let contacts = parsed_contacts(value.contacts.as_ref());
    let waba_id = waba_id.to_owned();

    for raw in array(value.messages.as_ref()) {
        match parse_message(raw) {
            Some(message) => {
                let contact = match_contact(&contacts, &message);
                out.push(Event::Message {
                    waba_id: waba_id.clone(),
                    metadata: metadata.clone(),
                    contact,
                    message,
                });
            }
            None => out.push(Event::Unrecognized {
                waba_id: waba_id.clone(),
                metadata: metadata.clone(),
                reason: "message without a usable id",
                raw: raw.clone(),
            }),
        }
    }
    for raw in array(value.statuses.as_ref()) {
        match parse_status(raw) {
            Some(status) => out.push(Event::Status {
                waba_id: waba_id.clone(),
                metadata: metadata.clone(),
                status,
            }),
            None => out.push(Event::Unrecognized {
                waba_id: waba_id.clone(),
                metadata: metadata.clone(),
                reason: "status without id or with an unknown status word",
                raw: raw.clone(),
            }),
        }
    }
    for raw in array(value.errors.as_ref()) {
        let error = serde_json::from_value(raw.clone()).unwrap_or_else(|_| ApiError {
            error_data: Some(raw.clone()),
            ..ApiError::default()
        });
        out.push(Event::Error {
            waba_id: waba_id.clone(),
            metadata: metadata.clone(),
            error,
        });
    }
}

/// Who an item is about: the ids of the WhatsApp user the router files it under. This is the
/// one rule of ownership — the receiver seals a queued piece under the key it names, the router
/// stores the item for the contact it names — so the two cannot disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Identities {
    pub bsuid: Option<String>,
    pub wa_id: Option<String>,
}

impl Identities {
    /// A message's sender: the matched contact entry's ids before the message's own.
    pub fn of_message(contact: Option<&Contact>, message: &Message) -> Self {
        Identities {
            bsuid: contact
                .and_then(|c| c.user_id.clone())
                .or_else(|| message.from_user_id.clone()),
            wa_id: contact
                .and_then(|c| c.wa_id.clone())
                .or_else(|| message.from.clone()),
        }
    }

    /// A status's recipient (the customer our message went to).
    pub fn of_status(status: &Status) -> Self {
        Identities {
            bsuid: status.recipient_user_id.clone(),
            wa_id: status.recipient_id.clone(),
        }
    }

    /// The identity that names the contact when it is new: the BSUID before the number.
    pub fn primary(&self) -> Option<crate::ids::Identity<'_>> {
        self.bsuid
            .as_deref()
            .map(crate::ids::Identity::Bsuid)
            .or_else(|| self.wa_id.as_deref().map(crate::ids::Identity::WaId))
    }

    /// Whether a `contacts[]` entry is this user's.
    pub fn names(&self, contact: &Contact) -> bool {
        (self.bsuid.is_some() && contact.user_id == self.bsuid)
            || (self.wa_id.is_some() && contact.wa_id == self.wa_id)
    }
}

/// The owner of each item of a `messages` change value, in order (messages, statuses,
/// errors), parsed exactly as [`Webhook::events`] parses them: `None` for errors, for items
/// the router cannot parse, and for messages that name nobody.
pub fn item_identities(value: &Value) -> Vec<Option<Identities>> {
    // Read in place (the receiver's hot path): no copy of the change value.
    let contacts = parsed_contacts(value.get("contacts"));
    let mut out = Vec::new();
    for raw in array(value.get("messages")) {
        out.push(parse_message(raw).and_then(|m| {
            let who = Identities::of_message(match_contact(&contacts, &m).as_ref(), &m);
            who.primary().is_some().then_some(who)
        }));
    }
    for raw in array(value.get("statuses")) {
        out.push(parse_status(raw).and_then(|s| {
            let who = Identities::of_status(&s);
            who.primary().is_some().then_some(who)
        }));
    }
    out.extend(array(value.get("errors")).iter().map(|_| None));
    out
}

/// One entry of a `user_id_update` change: a customer's BSUID changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdUpdate {
    /// The previous BSUID (and the number, when the entry names one).
    pub old: Identities,
    pub new: Identities,
    /// Meta's Unix seconds, 0 when absent.
    pub timestamp: i64,
}

/// The entries of a `user_id_update` change value (`{"user_id_update": [{"wa_id", "user_id":
/// {"previous", "current"}, "timestamp"}]}`) that name both BSUIDs.
pub fn user_id_updates(value: &Value) -> Vec<UserIdUpdate> {
    array(value.get("user_id_update"))
        .iter()
        .filter_map(|item| {
            let wa_id = str_field(item, "wa_id");
            let ids = item.get("user_id")?;
            let (previous, current) = (str_field(ids, "previous")?, str_field(ids, "current")?);
            Some(UserIdUpdate {
                old: Identities {
                    bsuid: Some(previous),
                    wa_id: wa_id.clone(),
                },
                new: Identities {
                    bsuid: Some(current),
                    wa_id,
                },
                timestamp: timestamp_field(item),
            })
        })
        .collect()
}

/// One entry of a `user_preferences` change: the customer stopped or resumed a category of
/// messages (today `marketing_messages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPreference {
    pub who: Identities,
    pub category: String,
    /// `stop` (else `resume`).
    pub stop: bool,
    pub timestamp: i64,
}

/// The entries of a `user_preferences` change value (`{"user_preferences": [{"wa_id",
/// "user_id", "category", "value": "stop"|"resume", "timestamp"}]}`) that name a customer.
pub fn user_preferences(value: &Value) -> Vec<UserPreference> {
    array(value.get("user_preferences"))
        .iter()
        .filter_map(|item| {
            let who = Identities {
                bsuid: str_field(item, "user_id"),
                wa_id: str_field(item, "wa_id"),
            };
            who.primary()?;
            let stop = match str_field(item, "value")?.to_ascii_lowercase().as_str() {
                "stop" => true,
                "resume" => false,
                _ => return None,
            };
            Some(UserPreference {
                who,
                category: str_field(item, "category").unwrap_or_default(),
                stop,
                timestamp: timestamp_field(item),
            })
        })
        .collect()
}

/// The `contacts[]` entries the router can read (others are left out, as by the router).
pub fn parse_contact(raw: &Value) -> Option<Contact> {
    Contact::deserialize(raw).ok()
}

fn parsed_contacts(contacts: Option<&Value>) -> Vec<Contact> {
    array(contacts).iter().filter_map(parse_contact).collect()
}

fn match_contact(contacts: &[Contact], message: &Message) -> Option<Contact> {
    let found = contacts.iter().find(|c| {
        (c.user_id.is_some() && c.user_id == message.from_user_id)
            || (c.wa_id.is_some() && c.wa_id == message.from)
    });
    match (found, contacts) {
        (Some(c), _) => Some(c.clone()),
        // One contact and a message without sender ids: it is theirs.
        (None, [only]) if message.from.is_none() && message.from_user_id.is_none() => {
            Some(only.clone())
        }
        _ => None,
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn timestamp_field(v: &Value) -> i64 {
    match v.get("timestamp") {
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn errors_field(v: &Value) -> Vec<ApiError> {
    array(v.get("errors"))
        .iter()
        .filter_map(|e| serde_json::from_value(e.clone()).ok())
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Option<T> {
    serde_json::from_value(v.get(key)?.clone()).ok()
}

/// One element of `messages[]`. `None` only when it has no string `id`.
pub fn parse_message(raw: &Value) -> Option<Message> {
    let id = str_field(raw, "id")?;
    let kind = str_field(raw, "type").unwrap_or_else(|| "unknown".to_owned());
    let parsed = match kind.as_str() {
        "text" => typed(raw, "text").map(Content::Text),
        "image" => typed(raw, "image").map(Content::Image),
        "video" => typed(raw, "video").map(Content::Video),
        "audio" => typed(raw, "audio").map(Content::Audio),
        "sticker" => typed(raw, "sticker").map(Content::Sticker),
        "document" => typed(raw, "document").map(Content::Document),
        "location" => typed(raw, "location").map(Content::Location),
        "contacts" => typed(raw, "contacts").map(Content::Contacts),
        "interactive" => typed(raw, "interactive").map(Content::Interactive),
        "button" => typed(raw, "button").map(Content::Button),
        "reaction" => typed(raw, "reaction").map(Content::Reaction),
        "order" => raw.get("order").cloned().map(Content::Order),
        "system" => typed(raw, "system").map(Content::System),
        "unsupported" | "unknown" => Some(Content::Unsupported(
            raw.get("unsupported").cloned().unwrap_or(Value::Null),
        )),
        _ => None,
    };
    Some(Message {
        id,
        from: str_field(raw, "from"),
        from_user_id: str_field(raw, "from_user_id"),
        timestamp: timestamp_field(raw),
        content: parsed.unwrap_or_else(|| Content::Unknown(raw.clone())),
        kind,
        context: typed(raw, "context"),
        referral: raw.get("referral").cloned(),
        errors: errors_field(raw),
    })
}

/// One element of `statuses[]`. `None` without an id or with a status word we do not know.
pub fn parse_status(raw: &Value) -> Option<Status> {
    let id = str_field(raw, "id")?;
    let status = DeliveryStatus::parse(raw.get("status")?.as_str()?)?;
    Some(Status {
        id,
        status,
        timestamp: timestamp_field(raw),
        recipient_id: str_field(raw, "recipient_id"),
        recipient_user_id: str_field(raw, "recipient_user_id"),
        recipient_parent_user_id: str_field(raw, "recipient_parent_user_id"),
        conversation: raw.get("conversation").cloned(),
        pricing: raw.get("pricing").cloned(),
        errors: errors_field(raw),
    })
}

/// Like [`str_field`]: ids given as numbers are read as their digits, empty ones as absent.
fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}
