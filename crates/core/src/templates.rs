//! A tenant's approved message templates: what the web inbox offers when the 24-hour window is
//! closed. Listed from 360dialog's template API (`GET /v1/configs/templates`, `waba_templates`)
//! by `relay templates sync`; not personal data.

use crate::ids::TenantId;
use crate::ports::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    /// E.g. `de`, `en_US`.
    pub language: String,
    /// `UTILITY`, `MARKETING`, `AUTHENTICATION`.
    pub category: String,
    /// `APPROVED`, `PENDING`, `REJECTED`, `PAUSED`, `DISABLED` …
    pub status: String,
    /// The body text with its `{{1}}` … placeholders.
    pub body: String,
    /// How many body parameters it takes.
    pub params: usize,
    /// When this was learnt (Unix seconds).
    pub updated_at: i64,
    /// Meta's quality rating (`GREEN`, `YELLOW`, `RED`), from its quality webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
}

impl Template {
    pub fn approved(&self) -> bool {
        self.status.eq_ignore_ascii_case("APPROVED")
    }

    /// The body with `values` in place of its placeholders (for showing what was sent).
    pub fn fill(&self, values: &[String]) -> String {
        let mut out = self.body.clone();
        for (i, v) in values.iter().enumerate() {
            out = out.replace(&format!("{{{{{}}}}}", i + 1), v);
        }
        out
    }

    /// The `components` of a send: the body's text parameters, in order.
    pub fn components(&self, values: &[String]) -> Vec<Value> {
        if values.is_empty() {
            return Vec::new();
        }
        let params: Vec<Value> = values
            .iter()
            .map(|v| serde_json::json!({"type": "text", "text": v}))
            .collect();
        vec![serde_json::json!({"type": "body", "parameters": params})]
    }
}

/// The highest `{{n}}` in a body (WhatsApp numbers them from 1, without gaps).
pub fn placeholder_count(body: &str) -> usize {
    let mut max = 0;
    let mut rest = body;
    while let Some(i) = rest.find("{{") {
        rest = &rest[i + 2..];
        if let Some(j) = rest.find("}}") {
            if let Ok(n) = rest[..j].trim().parse::<usize>() {
                max = max.max(n);
            }
            rest = &rest[j + 2..];
        }
    }
    max
}

/// The templates of a 360dialog `GET /v1/configs/templates` answer (`waba_templates`), or of
/// Meta's `GET /{waba-id}/message_templates` (`data`). Entries without a name are skipped.
pub fn parse_template_list(v: &Value, now: i64) -> Vec<Template> {
    let list = v
        .get("waba_templates")
        .or_else(|| v.get("data"))
        .and_then(Value::as_array);
    let mut out = Vec::new();
    for t in list.into_iter().flatten() {
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            continue;
        };
        let body = t
            .get("components")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|ty| ty.eq_ignore_ascii_case("BODY"))
            })
            .and_then(|c| c.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let s = |k: &str| {
            t.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        out.push(Template {
            name: name.to_owned(),
            language: s("language"),
            category: s("category"),
            status: s("status"),
            params: placeholder_count(&body),
            body,
            updated_at: now,
            quality: None,
        });
    }
    out
}

/// A tenant's templates.
#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Replaces the tenant's list with `templates` (what the provider lists now).
    async fn replace_templates(
        &self,
        tenant: &TenantId,
        templates: &[Template],
    ) -> Result<(), StoreError>;

    /// The tenant's templates, by name and language.
    async fn templates(&self, tenant: &TenantId) -> Result<Vec<Template>, StoreError>;
}

/// A tenant's stock answer ("Textbaustein"), inserted into the composer by staff; edited by
/// admins. Not personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    /// `q_` + 16 hex digits.
    pub id: String,
    pub title: String,
    pub text: String,
}

/// A tenant's quick replies.
#[async_trait]
pub trait QuickReplies: Send + Sync {
    /// Adds (or replaces, by id) a quick reply.
    async fn put_quick_reply(
        &self,
        tenant: &TenantId,
        reply: &QuickReply,
    ) -> Result<(), StoreError>;
    /// Removes one; `false` if there was none.
    async fn remove_quick_reply(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError>;
    /// The tenant's quick replies, by title.
    async fn quick_replies(&self, tenant: &TenantId) -> Result<Vec<QuickReply>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_360dialog_list_is_read_with_its_placeholders() {
        // Shape of 360dialog's GET /v1/configs/templates (docs.360dialog.com, "Templates").
        let v = json!({"count": 2, "offset": 0, "limit": 1000, "total": 2, "waba_templates": [
            {"name": "abholbereit", "language": "de", "category": "UTILITY", "status": "approved",
             "namespace": "ns", "rejected_reason": "NONE",
             "components": [{"type": "HEADER", "format": "TEXT", "text": "Apotheke"},
                            {"type": "BODY", "text": "Guten Tag {{1}}, Ihre Bestellung {{2}} liegt bereit."}]},
            {"name": "werbung", "language": "de", "category": "MARKETING", "status": "rejected",
             "components": [{"type": "BODY", "text": "Angebot"}]},
            {"language": "de"}
        ]});
        let list = parse_template_list(&v, 7);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].params, 2);
        assert!(list[0].approved() && !list[1].approved());
        assert_eq!(
            list[0].fill(&["Frau M.".into(), "A-17".into()]),
            "Guten Tag Frau M., Ihre Bestellung A-17 liegt bereit."
        );
        assert_eq!(
            list[0].components(&["x".into()])[0]["parameters"][0]["text"],
            "x"
        );
        assert_eq!(placeholder_count("{{1}} {{ 3 }} {{x}}"), 3);
    }
}
