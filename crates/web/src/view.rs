//! What the templates show: conversations and messages turned into plain fields. Nothing
//! here produces HTML; the templates escape every field.

use crate::i18n::Texts;
use relay_core::media::MediaStatus;
use relay_core::records::{Conversation, Direction, StoredMessage};
use relay_core::routing::SERVICE_WINDOW_SECS;
use relay_core::webhook::DeliveryStatus;
use serde_json::Value;

fn berlin() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Europe/Berlin").unwrap_or(jiff::tz::TimeZone::UTC)
}

/// "14:05" today, "03.11." this year, "03.11.2025" before (Europe/Berlin).
pub fn when(ts: i64, now: i64) -> String {
    let tz = berlin();
    let (Ok(t), Ok(n)) = (
        jiff::Timestamp::from_second(ts),
        jiff::Timestamp::from_second(now),
    ) else {
        return String::new();
    };
    let (t, n) = (t.to_zoned_datetime(tz.clone()), n.to_zoned_datetime(tz));
    if t.date() == n.date() {
        t.strftime("%H:%M").to_string()
    } else if t.year() == n.year() {
        t.strftime("%d.%m. %H:%M").to_string()
    } else {
        t.strftime("%d.%m.%Y").to_string()
    }
}

pub struct ConversationRow {
    pub id: String,
    pub name: String,
    pub preview: String,
    pub time: String,
    pub unread: i64,
    pub window_open: bool,
    pub opted_out: bool,
    pub active: bool,
    /// Who it is assigned to (the staff member's short name).
    pub assignee: Option<String>,
    pub labels: Vec<String>,
    pub closed: bool,
}

impl ConversationRow {
    pub fn new(
        c: &Conversation,
        last: Option<&StoredMessage>,
        now: i64,
        active: Option<&str>,
        t: &Texts,
    ) -> Self {
        ConversationRow {
            id: c.contact_id.to_string(),
            name: c.name.clone().unwrap_or_else(|| t.unknown_name.to_owned()),
            preview: last.map(|m| preview(m, t)).unwrap_or_default(),
            time: when(c.last_message_at, now),
            unread: c.unread,
            window_open: window_open(c, now),
            opted_out: c.opted_out,
            active: active == Some(c.contact_id.as_str()),
            assignee: None,
            labels: Vec::new(),
            closed: false,
        }
    }
}

pub fn window_open(c: &Conversation, now: i64) -> bool {
    c.last_inbound_at
        .is_some_and(|t| now < t + SERVICE_WINDOW_SECS)
}

/// One line of a message, for the list: its text, or what it is.
pub fn preview(m: &StoredMessage, t: &Texts) -> String {
    let text = m
        .text
        .clone()
        .or_else(|| caption(m))
        .unwrap_or_else(|| format!("[{}]", m.kind));
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(80)
        .collect();
    if m.direction == Direction::Outbound {
        format!("{}: {line}", t.you)
    } else {
        line
    }
}

fn object(m: &StoredMessage) -> Option<&serde_json::Map<String, Value>> {
    m.content.get(&m.kind).and_then(Value::as_object)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str()
}

fn caption(m: &StoredMessage) -> Option<String> {
    object(m)
        .and_then(|o| o.get("caption"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A run of text, or a link (http/https only, so no `javascript:` can reach an `href`).
pub struct Segment {
    pub text: String,
    pub href: Option<String>,
}

pub fn segments(text: &str) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut plain = String::new();
    for (i, word) in text.split_inclusive(char::is_whitespace).enumerate() {
        let _ = i;
        let trimmed = word.trim_end();
        let is_link = (trimmed.starts_with("https://") || trimmed.starts_with("http://"))
            && trimmed.len() > 8
            && trimmed.len() <= 2048;
        if is_link {
            // Trailing punctuation is the sentence's, not the link's.
            let link = trimmed.trim_end_matches(['.', ',', ')', '!', '?', ';', ':']);
            if !plain.is_empty() {
                out.push(Segment {
                    text: std::mem::take(&mut plain),
                    href: None,
                });
            }
            out.push(Segment {
                text: link.to_owned(),
                href: Some(link.to_owned()),
            });
            plain.push_str(&word[link.len()..]);
        } else {
            plain.push_str(word);
        }
    }
    if !plain.is_empty() {
        out.push(Segment {
            text: plain,
            href: None,
        });
    }
    out
}

pub enum MediaKind {
    Image,
    Audio,
    Video,
    File,
}

pub struct MediaView {
    pub url: String,
    pub kind: MediaKind,
    pub pending: bool,
    pub failed: Option<String>,
    pub filename: String,
}

impl MediaView {
    pub fn is_image(&self) -> bool {
        matches!(self.kind, MediaKind::Image)
    }
    pub fn is_audio(&self) -> bool {
        matches!(self.kind, MediaKind::Audio)
    }
    pub fn is_video(&self) -> bool {
        matches!(self.kind, MediaKind::Video)
    }
    pub fn is_file(&self) -> bool {
        matches!(self.kind, MediaKind::File)
    }
}

pub struct MessageView {
    pub id: String,
    pub inbound: bool,
    pub kind: String,
    pub time: String,
    pub text: Vec<Segment>,
    pub media: Option<MediaView>,
    pub location: Option<(String, String)>,
    pub contacts: Vec<String>,
    pub reactions: Vec<String>,
    /// A reaction whose message is not on this page: shown as its own line.
    pub reaction: Option<String>,
    pub quote: Option<String>,
    pub notice: Option<String>,
    pub status: String,
    pub status_class: &'static str,
    pub error: Option<String>,
    /// An internal note: its author's short name.
    pub note_by: Option<String>,
    /// For ordering notes among messages.
    pub at: i64,
    /// Sent from the Business app, or imported from its history.
    pub origin: Option<&'static str>,
    /// E-Rezept tokens the customer sent: (prescription id, token to copy).
    pub prescriptions: Vec<(String, String)>,
}

fn status_label(s: Option<DeliveryStatus>, t: &Texts) -> (String, &'static str) {
    match s {
        None => (String::new(), ""),
        Some(DeliveryStatus::Queued) => (t.status_queued.into(), "queued"),
        Some(DeliveryStatus::Sent) => (t.status_sent.into(), "sent"),
        Some(DeliveryStatus::Delivered) => (t.status_delivered.into(), "delivered"),
        Some(DeliveryStatus::Read) | Some(DeliveryStatus::Played) => (t.status_read.into(), "read"),
        Some(DeliveryStatus::Failed) => (t.status_failed.into(), "failed"),
    }
}

/// A page of messages (newest first, as the store gives them) as the view shows them:
/// oldest first, reactions on their messages, quotes resolved within the page.
pub fn messages(page: &[StoredMessage], now: i64, t: &Texts) -> Vec<MessageView> {
    let mut views: Vec<MessageView> = Vec::new();
    let mut by_wamid: std::collections::HashMap<&str, usize> = Default::default();
    for m in page.iter().rev() {
        if m.kind == "reaction" {
            let target = str_at(&m.content, &["reaction", "message_id"]);
            let emoji = str_at(&m.content, &["reaction", "emoji"]).unwrap_or_default();
            if let Some(i) = target.and_then(|w| by_wamid.get(w)) {
                if !emoji.is_empty() {
                    views[*i].reactions.push(emoji.to_owned());
                }
                continue;
            }
        }
        // An edit or a withdrawal shows on the message it changes, when that is on the page.
        if matches!(m.kind.as_str(), "edit" | "revoke")
            && let Some(i) = m.reply_to.as_deref().and_then(|w| by_wamid.get(w))
        {
            let target = &mut views[*i];
            if m.kind == "revoke" {
                target.text = Vec::new();
                target.media = None;
                target.notice = Some(t.revoked.to_owned());
            } else {
                let edit = m.content.pointer("/unknown/edit");
                let new_text = edit.and_then(|e| {
                    str_at(e, &["message", "text", "body"]).or_else(|| str_at(e, &["text", "body"]))
                });
                if let Some(text) = new_text {
                    target.text = segments(text);
                }
                target.notice = Some(t.edited.to_owned());
            }
            continue;
        }
        let view = message(m, page, now, t);
        if !m.wamid.is_empty() {
            by_wamid.insert(m.wamid.as_str(), views.len());
        }
        views.push(view);
    }
    views
}

/// The messages with the team's notes among them, by time.
pub fn with_notes(
    mut views: Vec<MessageView>,
    notes: &[relay_core::records::Note],
    names: &std::collections::HashMap<String, String>,
    now: i64,
    t: &Texts,
) -> Vec<MessageView> {
    for n in notes {
        views.push(MessageView {
            id: n.id.clone(),
            inbound: false,
            kind: "note".into(),
            time: when(n.created_at, now),
            text: segments(&n.text),
            media: None,
            location: None,
            contacts: Vec::new(),
            reactions: Vec::new(),
            reaction: None,
            quote: None,
            notice: None,
            status: String::new(),
            status_class: "",
            error: None,
            note_by: Some(
                names
                    .get(&n.author)
                    .cloned()
                    .unwrap_or_else(|| t.unknown_name.to_owned()),
            ),
            at: n.created_at,
            origin: None,
            prescriptions: Vec::new(),
        });
    }
    // Stable: messages keep their order among equal times, notes come after them.
    views.sort_by_key(|v| v.at);
    views
}

fn message(m: &StoredMessage, page: &[StoredMessage], now: i64, t: &Texts) -> MessageView {
    let (status, status_class) = status_label(
        (m.direction == Direction::Outbound)
            .then_some(m.status)
            .flatten(),
        t,
    );
    let mut v = MessageView {
        id: m.id.clone(),
        inbound: m.direction == Direction::Inbound,
        kind: m.kind.clone(),
        time: when(m.timestamp, now),
        text: Vec::new(),
        media: None,
        location: None,
        contacts: Vec::new(),
        reactions: Vec::new(),
        reaction: None,
        quote: m.reply_to.as_deref().map(|w| {
            page.iter()
                .find(|q| q.wamid == w || q.id == w)
                .map(|q| preview(q, t))
                .unwrap_or_else(|| "…".to_owned())
        }),
        notice: None,
        prescriptions: m
            .content
            .get("prescriptions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                serde_json::from_value::<relay_core::erezept::Prescription>(p.clone()).ok()
            })
            // Only what passes the checks again is shown (the content is the store's).
            .filter(|p| relay_core::erezept::find_in_text(&p.token()) == [p.clone()])
            .map(|p| (p.task_id.clone(), p.token()))
            .collect(),
        origin: m.origin.map(|o| match o {
            relay_core::webhook::Origin::BusinessApp => t.from_business_app,
            relay_core::webhook::Origin::History => t.from_history,
        }),
        status,
        status_class,
        note_by: None,
        at: m.timestamp,
        error: m.error.as_ref().map(|e| {
            let title = e.title.as_deref().unwrap_or("error");
            format!("{title} ({})", e.code)
        }),
    };
    let text = m.text.clone().or_else(|| caption(m));
    if let Some(text) = &text {
        v.text = segments(text);
    }
    if let Some(media) = &m.media {
        let kind = match m.kind.as_str() {
            "image" | "sticker" => MediaKind::Image,
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => MediaKind::File,
        };
        v.media = Some(MediaView {
            url: format!("/inbox/media/{}", media.media_id),
            kind,
            pending: media.status == MediaStatus::Pending,
            failed: match media.status {
                MediaStatus::Deleted => Some(t.media_deleted.to_owned()),
                _ => None,
            }
            .or_else(|| {
                (media.status == MediaStatus::Failed).then(|| {
                    format!(
                        "{}{}",
                        t.media_failed,
                        media
                            .reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )
                })
            }),
            filename: object(m)
                .and_then(|o| o.get("filename"))
                .and_then(Value::as_str)
                .unwrap_or(t.open_file)
                .to_owned(),
        });
    }
    match m.kind.as_str() {
        "text" | "image" | "sticker" | "audio" | "video" | "document" => {}
        "location" => {
            let loc = &m.content["location"];
            if let (Some(lat), Some(lon)) = (loc["latitude"].as_f64(), loc["longitude"].as_f64()) {
                // Numbers printed by Rust: nothing of the customer's reaches the URL but them.
                let url = format!(
                    "https://www.openstreetmap.org/?mlat={lat:.6}&mlon={lon:.6}#map=17/{lat:.6}/{lon:.6}"
                );
                let label = [str_at(loc, &["name"]), str_at(loc, &["address"])]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ");
                v.location = Some((
                    url,
                    if label.is_empty() {
                        t.map.into()
                    } else {
                        label
                    },
                ));
            }
        }
        "contacts" => {
            for c in m.content["contacts"].as_array().into_iter().flatten() {
                let name = str_at(c, &["name", "formatted_name"]).unwrap_or("?");
                let phones: Vec<&str> = c["phones"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["phone"].as_str())
                    .collect();
                v.contacts.push(if phones.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name}: {}", phones.join(", "))
                });
            }
        }
        "reaction" => {
            let emoji = str_at(&m.content, &["reaction", "emoji"]).unwrap_or_default();
            v.reaction = Some(format!("{}: {emoji}", t.reacted));
        }
        "interactive" => {
            let i = &m.content["interactive"];
            let answer = str_at(i, &["button_reply", "title"])
                .or_else(|| str_at(i, &["list_reply", "title"]))
                .or_else(|| str_at(i, &["nfm_reply", "body"]));
            if v.text.is_empty()
                && let Some(a) = answer
            {
                v.text = segments(a);
            }
        }
        "button" => {
            if v.text.is_empty()
                && let Some(a) = str_at(&m.content, &["button", "text"])
            {
                v.text = segments(a);
            }
        }
        "template" => {
            if v.text.is_empty() {
                let name = str_at(&m.content, &["template", "name"]).unwrap_or("template");
                v.notice = Some(format!("Template: {name}"));
            }
        }
        "system"
            if str_at(&m.content, &["system", "type"])
                .is_some_and(|k| relay_core::webhook::IDENTITY_CHANGES.contains(&k)) =>
        {
            v.notice = Some(t.identity_changed.to_owned());
        }
        other => {
            let detail = str_at(&m.content, &["unsupported", "type"]).unwrap_or(other);
            v.notice = Some(format!("{} ({detail})", t.unsupported));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_http_only_and_leave_punctuation() {
        let s =
            segments("Siehe https://apotheke.example/a. Oder javascript:alert(1) http://x.example");
        let links: Vec<_> = s.iter().filter_map(|s| s.href.as_deref()).collect();
        assert_eq!(links, ["https://apotheke.example/a", "http://x.example"]);
        let all: String = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            all,
            "Siehe https://apotheke.example/a. Oder javascript:alert(1) http://x.example"
        );
    }

    fn stored(wamid: &str, kind: &str, ts: i64, content: Value) -> StoredMessage {
        StoredMessage {
            id: format!("m_{wamid}"),
            wamid: wamid.into(),
            wamid_key: wamid.into(),
            contact_id: relay_core::ids::ContactId::parse("c_00000000000000000000000000000000")
                .unwrap(),
            direction: Direction::Outbound,
            kind: kind.into(),
            text: content
                .pointer("/text/body")
                .and_then(Value::as_str)
                .map(str::to_owned),
            content,
            timestamp: ts,
            received_at: ts,
            status: None,
            error: None,
            reply_to: None,
            referral: None,
            media: None,
            origin: Some(relay_core::webhook::Origin::BusinessApp),
            expires_at: ts + 86_400,
        }
    }

    #[test]
    fn edits_and_withdrawals_show_on_their_message_and_changes_of_identity_as_notices() {
        let t = &crate::i18n::DE;
        let original = stored(
            "wamid.A",
            "text",
            10,
            serde_json::json!({"text": {"body": "Morgen ab 10"}}),
        );
        let withdrawn = stored(
            "wamid.B",
            "text",
            11,
            serde_json::json!({"text": {"body": "Falsch"}}),
        );
        let mut edit = stored(
            "wamid.C",
            "edit",
            12,
            serde_json::json!({"unknown": {"type": "edit",
            "edit": {"original_message_id": "wamid.A", "message": {"type": "text", "text": {"body": "Morgen ab 11"}}}}}),
        );
        edit.reply_to = Some("wamid.A".into());
        let mut revoke = stored(
            "wamid.D",
            "revoke",
            13,
            serde_json::json!({"unknown": {"type": "revoke",
            "revoke": {"original_message_id": "wamid.B"}}}),
        );
        revoke.reply_to = Some("wamid.B".into());
        let mut notice = stored(
            "wamid.E",
            "system",
            14,
            serde_json::json!({"system": {"type": "user_changed_number",
            "body": "User changed from 1 to 2", "wa_id": "2"}}),
        );
        notice.direction = Direction::Inbound;
        notice.origin = None;
        // Newest first, as the store gives them.
        let page = [notice, revoke, edit, withdrawn, original];
        let views = messages(&page, 20, t);
        assert_eq!(
            views.len(),
            3,
            "the edit and the withdrawal are no lines of their own"
        );
        let text = |v: &MessageView| v.text.iter().map(|s| s.text.as_str()).collect::<String>();
        assert_eq!(text(&views[0]), "Morgen ab 11");
        assert_eq!(views[0].notice.as_deref(), Some(t.edited));
        assert_eq!(views[0].origin, Some(t.from_business_app));
        assert_eq!(text(&views[1]), "");
        assert_eq!(views[1].notice.as_deref(), Some(t.revoked));
        assert_eq!(views[2].notice.as_deref(), Some(t.identity_changed));
    }

    #[test]
    fn only_valid_prescription_tokens_are_shown() {
        let ac = "777bea0e13cc9c42ceec14aec3ddee2263325dc2c6c699db115f58fe423607ea";
        let m = stored(
            "wamid.R",
            "text",
            10,
            serde_json::json!({"text": {"body": "x"}, "prescriptions": [
            {"task_id": "160.123.456.789.123.58", "access_code": ac},
            {"task_id": "160.123.456.789.123.58", "access_code": "\"><script>"},
            {"task_id": "160.123.456.789.123.59", "access_code": ac}]}),
        );
        let v = &messages(&[m], 20, &crate::i18n::DE)[0];
        assert_eq!(
            v.prescriptions,
            [(
                "160.123.456.789.123.58".to_owned(),
                format!("Task/160.123.456.789.123.58/$accept?ac={ac}")
            )]
        );
    }

    #[test]
    fn times_are_berlin_local() {
        // 2026-07-01 12:00 UTC is 14:00 in Berlin (CEST).
        let noon = 1_782_907_200;
        assert_eq!(when(noon, noon + 60), "14:00");
        assert_eq!(when(noon, noon + 86_400 * 2), "01.07. 14:00");
        assert_eq!(when(noon, noon + 86_400 * 400), "01.07.2026");
    }
}
