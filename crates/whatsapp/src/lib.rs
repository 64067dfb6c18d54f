//! Sending through WhatsApp: 360dialog's Cloud API proxy (`POST {base}/messages` with
//! `D360-API-KEY`) or Meta's Graph API directly (`POST {base}/{phone_number_id}/messages` with a
//! bearer token). Every failure is classified (transient, per-recipient, permanent) so the
//! sender knows whether to retry. Errors carry codes and titles, never message content.

use relay_core::outbound::{Failure, classify_meta_code};
use relay_core::tenant::{Channel, Provider};
use relay_core::webhook::ApiError;
use secrecy::ExposeSecret;
use serde_json::Value;
use std::time::Duration;

pub const DIALOG360_BASE_URL: &str = "https://waba-v2.360dialog.io";
/// Meta's Graph API, at a version well inside its support window: v25.0 (released 2026-02-18,
/// available until 2028-07-29 per Meta's versions changelog; v21.0, used before, expires
/// 2027-01-21). A channel's `api_base_url` picks another version
/// (`https://graph.facebook.com/v26.0`).
pub const META_BASE_URL: &str = "https://graph.facebook.com/v25.0";

pub use relay_core::outbound::SendError;

/// One HTTP client (one TLS setup: loading the system's root certificates is most of a
/// client's cost, and of a Lambda's cold start). Every read must make progress within the
/// timeout; API calls also finish within it, file transfers (up to 100 MB) have no total
/// deadline.
#[derive(Clone, Debug)]
pub struct WhatsAppClient {
    http: reqwest::Client,
    timeout: Duration,
}

/// What `GET /{media-id}` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaUrl {
    pub url: String,
    pub mime_type: Option<String>,
    /// As the provider gives it (base64 or hex).
    pub sha256: Option<String>,
    pub file_size: Option<u64>,
}

impl Default for WhatsAppClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl WhatsAppClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(timeout)
            .user_agent(concat!(
                "pharmacy-whatsapp-relay/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_default();
        WhatsAppClient { http, timeout }
    }

    /// The underlying HTTP client, for other outbound calls (forwards to the pharmacy) to share;
    /// give each request its own `.timeout(…)`.
    pub fn http(&self) -> reqwest::Client {
        self.http.clone()
    }

    fn key(channel: &Channel) -> Result<&str, SendError> {
        channel
            .send_key
            .as_ref()
            .map(|k| k.expose_secret())
            .ok_or_else(|| {
                SendError::new(
                    Failure::Permanent,
                    0,
                    "the channel has no API credentials (api_key / access_token)",
                )
            })
    }

    fn base(channel: &Channel) -> &str {
        let default = match channel.provider() {
            Provider::Dialog360 => DIALOG360_BASE_URL,
            Provider::Meta => META_BASE_URL,
        };
        channel
            .api_base_url
            .as_deref()
            .unwrap_or(default)
            .trim_end_matches('/')
    }

    /// An authorized GET; `deadline`: whether it must finish within the timeout (API calls) or
    /// only keep making progress (downloads).
    fn authorized(
        &self,
        channel: &Channel,
        url: &str,
        deadline: bool,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let key = Self::key(channel)?;
        let req = match channel.provider() {
            Provider::Dialog360 => self.http.get(url).header("D360-API-KEY", key),
            Provider::Meta => self.http.get(url).bearer_auth(key),
        };
        Ok(if deadline {
            req.timeout(self.timeout)
        } else {
            req
        })
    }

    /// `GET /{media-id}`: where a file is, its type, hash and size.
    pub async fn media_url(
        &self,
        channel: &Channel,
        media_id: &str,
    ) -> Result<MediaUrl, SendError> {
        if media_id.is_empty()
            || !media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(SendError::new(Failure::Permanent, 0, "not a media id"));
        }
        let url = format!("{}/{media_id}", Self::base(channel));
        let req = self.authorized(channel, &url, true)?;
        let json = Self::answer(req.send().await).await?;
        let url = json
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| SendError::new(Failure::Transient, 0, "the media answer has no url"))?;
        Ok(MediaUrl {
            url: url.to_owned(),
            mime_type: json
                .get("mime_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            sha256: json
                .get("sha256")
                .and_then(Value::as_str)
                .map(str::to_owned),
            file_size: json
                .get("file_size")
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())),
        })
    }

    /// Uploads a file for sending (`POST /media`, multipart); WhatsApp's media id on success.
    pub async fn upload_media(
        &self,
        channel: &Channel,
        bytes: Vec<u8>,
        mime_type: &str,
        filename: &str,
    ) -> Result<String, SendError> {
        let key = Self::key(channel)?;
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_owned())
            .mime_str(mime_type)
            .map_err(|_| SendError::new(Failure::Permanent, 0, "not a MIME type"))?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime_type.to_owned())
            .part("file", part);
        let req = match channel.provider() {
            Provider::Dialog360 => self
                .http
                .post(format!("{}/media", Self::base(channel)))
                .header("D360-API-KEY", key),
            Provider::Meta => self
                .http
                .post(format!(
                    "{}/{}/media",
                    Self::base(channel),
                    channel.phone_number_id
                ))
                .bearer_auth(key),
        };
        let json = Self::answer(req.multipart(form).send().await).await?;
        json.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SendError::new(Failure::Transient, 0, "the upload answer has no id"))
    }

    /// Starts downloading a file from the URL `media_url` gave. Through 360dialog the URL's
    /// host is swapped for 360dialog's (same path and query), with the API key.
    pub async fn download(
        &self,
        channel: &Channel,
        url: &str,
    ) -> Result<reqwest::Response, SendError> {
        let target = match channel.provider() {
            Provider::Dialog360 => {
                let parsed = reqwest::Url::parse(url).map_err(|_| {
                    SendError::new(Failure::Permanent, 0, "the media url is not a URL")
                })?;
                let mut path = parsed.path().to_owned();
                if let Some(q) = parsed.query() {
                    path.push('?');
                    path.push_str(q);
                }
                format!("{}{path}", Self::base(channel))
            }
            Provider::Meta => url.to_owned(),
        };
        let req = self.authorized(channel, &target, false)?;
        let resp = Self::transport(req.send().await)?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(classify(status, &json, &text))
    }

    fn transport(
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, SendError> {
        match r {
            Ok(r) => Ok(r),
            Err(e) if e.is_timeout() => Err(SendError::new(Failure::Transient, 0, "timeout")),
            Err(e) if e.is_connect() => {
                Err(SendError::new(Failure::Transient, 0, "connection failed"))
            }
            Err(_) => Err(SendError::new(Failure::Transient, 0, "request failed")),
        }
    }

    async fn answer(r: Result<reqwest::Response, reqwest::Error>) -> Result<Value, SendError> {
        let resp = Self::transport(r)?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(classify(status, &json, &text))
        }
    }

    fn request(
        &self,
        channel: &Channel,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let key = channel.send_key.as_ref().ok_or_else(|| {
            SendError::new(
                Failure::Permanent,
                0,
                "the channel has no sending credentials (api_key / access_token)",
            )
        })?;
        let req = match channel.provider() {
            Provider::Dialog360 => {
                let base = channel
                    .api_base_url
                    .as_deref()
                    .unwrap_or(DIALOG360_BASE_URL)
                    .trim_end_matches('/');
                self.http
                    .post(format!("{base}/messages"))
                    .timeout(self.timeout)
                    .header("D360-API-KEY", key.expose_secret())
            }
            Provider::Meta => {
                let base = channel
                    .api_base_url
                    .as_deref()
                    .unwrap_or(META_BASE_URL)
                    .trim_end_matches('/');
                self.http
                    .post(format!("{base}/{}/messages", channel.phone_number_id))
                    .timeout(self.timeout)
                    .bearer_auth(key.expose_secret())
            }
        };
        Ok(req.json(body))
    }

    /// Sends a Cloud API message body; the wamid on success.
    pub async fn send(&self, channel: &Channel, body: &Value) -> Result<String, SendError> {
        let resp = self.call(channel, body).await?;
        resp.pointer("/messages/0/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                SendError::new(
                    Failure::Transient,
                    0,
                    "the provider's answer has no message id",
                )
            })
    }

    /// The channel's message templates, as the provider lists them: 360dialog's
    /// `GET /v1/configs/templates` (its answer's `waba_templates`), or Meta's
    /// `GET /{waba-id}/message_templates` (`data`, all pages) for a channel with its `waba_id`.
    pub async fn list_templates(&self, channel: &Channel) -> Result<Value, SendError> {
        let key = channel.send_key.as_ref().ok_or_else(|| {
            SendError::new(
                Failure::Permanent,
                0,
                "the channel has no sending credentials (api_key or access_token)",
            )
        })?;
        match channel.provider() {
            Provider::Dialog360 => {
                let base = channel
                    .api_base_url
                    .as_deref()
                    .unwrap_or(DIALOG360_BASE_URL)
                    .trim_end_matches('/');
                let req = self
                    .http
                    .get(format!("{base}/v1/configs/templates?limit=1000"))
                    .header("D360-API-KEY", key.expose_secret());
                self.get_json(req).await
            }
            Provider::Meta => {
                let waba = channel.waba_id.as_deref().ok_or_else(|| {
                    SendError::new(
                        Failure::Permanent,
                        0,
                        "listing a Meta channel's templates needs its waba_id in relay.toml",
                    )
                })?;
                let base = channel
                    .api_base_url
                    .as_deref()
                    .unwrap_or(META_BASE_URL)
                    .trim_end_matches('/');
                let mut url = format!(
                    "{base}/{waba}/message_templates?fields=name,language,category,status,components,quality_score&limit=250"
                );
                let mut all = Vec::new();
                // Pages follow `paging.next`; a bounded number, so a provider bug cannot loop.
                for _ in 0..40 {
                    let page = self
                        .get_json(self.http.get(&url).bearer_auth(key.expose_secret()))
                        .await?;
                    all.extend(page["data"].as_array().cloned().unwrap_or_default());
                    match page.pointer("/paging/next").and_then(Value::as_str) {
                        // Only pages of the same host (the token goes with the request).
                        Some(next) if next.starts_with(base.split("/v").next().unwrap_or(base)) => {
                            url = next.to_owned();
                        }
                        _ => break,
                    }
                }
                Ok(serde_json::json!({ "data": all }))
            }
        }
    }

    async fn get_json(&self, req: reqwest::RequestBuilder) -> Result<Value, SendError> {
        let resp = req.timeout(self.timeout).send().await.map_err(|e| {
            // The error's text may name the URL; the reason alone is enough.
            let why = if e.is_timeout() {
                "timeout"
            } else {
                "request failed"
            };
            SendError::new(Failure::Transient, 0, why)
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(json)
        } else {
            Err(classify(status, &json, &text))
        }
    }

    /// Marks an inbound message as read.
    pub async fn mark_read(
        &self,
        channel: &Channel,
        wamid: &str,
        typing: bool,
    ) -> Result<(), SendError> {
        self.call(
            channel,
            &relay_core::outbound::mark_read_body(wamid, typing),
        )
        .await
        .map(|_| ())
    }

    async fn call(&self, channel: &Channel, body: &Value) -> Result<Value, SendError> {
        let resp = match self.request(channel, body)?.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(SendError::new(Failure::Transient, 0, "timeout"));
            }
            Err(e) if e.is_connect() => {
                return Err(SendError::new(Failure::Transient, 0, "connection failed"));
            }
            Err(_) => return Err(SendError::new(Failure::Transient, 0, "request failed")),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let mut err = classify(status, &json, &text);
        err.retry_after = retry_after;
        Err(err)
    }
}

/// Maps a failed answer to what the sender should do (domain-facts §5).
pub fn classify(status: u16, json: &Value, raw: &str) -> SendError {
    let meta: Option<ApiError> = json
        .get("error")
        .and_then(|e| serde_json::from_value::<ApiError>(e.clone()).ok())
        .filter(|e| e.code != 0);
    if let Some(mut e) = meta {
        // The message may echo recipient data: keep only code and a generic title.
        let failure = classify_meta_code(e.code);
        e.message = None;
        e.error_data = None;
        if e.title.is_none() {
            e.title = Some(format!("WhatsApp error {}", e.code));
        }
        return SendError {
            failure,
            error: Box::new(e),
            retry_after: None,
        };
    }
    let lower = raw.to_ascii_lowercase();
    match status {
        429 => SendError::new(Failure::Transient, 429, "rate limited (HTTP 429)"),
        // 360dialog signals its own endpoint rate limit with a 400.
        400 if lower.contains("rate limit") || lower.contains("too many") => SendError::new(
            Failure::Transient,
            400,
            "rate limited by 360dialog (HTTP 400)",
        ),
        401 => SendError::new(
            Failure::Permanent,
            401,
            "the API key was refused (HTTP 401)",
        ),
        403 => SendError::new(Failure::Permanent, 403, "the channel is blocked (HTTP 403)"),
        500..=599 => SendError::new(
            Failure::Transient,
            i64::from(status),
            format!("provider error (HTTP {status})"),
        ),
        s => SendError::new(
            Failure::Permanent,
            i64::from(s),
            format!("refused (HTTP {s})"),
        ),
    }
}

#[async_trait::async_trait]
impl relay_core::sending::WhatsAppApi for WhatsAppClient {
    async fn send(&self, channel: &Channel, body: &Value) -> Result<String, SendError> {
        WhatsAppClient::send(self, channel, body).await
    }

    async fn mark_read(
        &self,
        channel: &Channel,
        wamid: &str,
        typing: bool,
    ) -> Result<(), SendError> {
        WhatsAppClient::mark_read(self, channel, wamid, typing).await
    }

    async fn upload_media(
        &self,
        channel: &Channel,
        bytes: Vec<u8>,
        mime_type: &str,
        filename: &str,
    ) -> Result<String, SendError> {
        WhatsAppClient::upload_media(self, channel, bytes, mime_type, filename).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classification() {
        let meta = |code: i64| json!({"error": {"code": code, "message": "Recipient 4915100000000 ...", "error_data": {"details": "x"}}});
        assert_eq!(classify(400, &meta(131047), "").failure, Failure::Permanent);
        assert_eq!(classify(400, &meta(130429), "").failure, Failure::Transient);
        assert_eq!(
            classify(400, &meta(131056), "").failure,
            Failure::PairRateLimited
        );
        let e = classify(400, &meta(131026), "");
        assert!(
            e.error.message.is_none() && e.error.error_data.is_none(),
            "no echoed recipient data is kept"
        );
        assert_eq!(classify(429, &Value::Null, "").failure, Failure::Transient);
        assert_eq!(
            classify(
                400,
                &Value::Null,
                "{\"meta\":{\"developer_message\":\"Rate limit hit\"}}"
            )
            .failure,
            Failure::Transient
        );
        assert_eq!(
            classify(400, &Value::Null, "bad request").failure,
            Failure::Permanent
        );
        assert_eq!(classify(401, &Value::Null, "").failure, Failure::Permanent);
        assert_eq!(classify(403, &Value::Null, "").failure, Failure::Permanent);
        assert_eq!(classify(502, &Value::Null, "").failure, Failure::Transient);
    }
}
