//! Fetching an inbound message's file: `GET /{media-id}` for its URL, the download (through
//! 360dialog's host), a size bound, the SHA-256 check against the webhook's, sealed chunk by
//! chunk into the blob store. Never more than one chunk of the file in memory, except a photo
//! or PDF small enough to be read for E-Rezept codes (`relay_scan`): that is kept whole until
//! its codes are read, off the async runtime, within the scan limits.
//!
//! 360dialog blocks a number's media retrieval for an hour after more than five failed media
//! requests in an hour: failures are counted per channel and hour in the store (shared by all
//! instances), and at [`MEDIA_FAILURE_BUDGET`] fetches for that channel wait for the next hour.

use crate::{Outcome, Sender};
use base64::Engine;
use relay_core::ids::{ContactId, TenantId};
use relay_core::media::{FileSealer, MediaInfo, MediaStatus, object_key};
use relay_core::outbound::Failure;
use relay_core::ports::StoreError;
use relay_core::ports::store_roles::*;
use serde_json::Value;
use std::time::Duration;

/// Failed media requests per channel and hour before fetching pauses (360dialog blocks at 6).
pub const MEDIA_FAILURE_BUDGET: u32 = 4;

/// Which fetch attempt a failure belongs to.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    tenant: &'a TenantId,
    key: &'a str,
    channel: &'a str,
    receives: u32,
}

/// What the webhook said about the file (from the stored, opened message content).
struct Expected {
    wa_media_id: String,
    sha256: Option<String>,
    mime_type: Option<String>,
}

fn expected(content: &Value) -> Option<Expected> {
    let media = content.as_object()?.values().next()?;
    Some(Expected {
        wa_media_id: media.get("id")?.as_str()?.to_owned(),
        sha256: media
            .get("sha256")
            .and_then(Value::as_str)
            .map(str::to_owned),
        mime_type: media
            .get("mime_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// True if `claimed` (base64, as webhooks give it, or hex, as some API answers do) is `hash`.
pub fn hash_matches(claimed: &str, hash: &[u8; 32]) -> bool {
    let claimed = claimed.trim();
    let b64 = base64::engine::general_purpose::STANDARD.encode(hash);
    claimed == b64 || claimed.eq_ignore_ascii_case(&hex::encode(hash))
}

impl Sender {
    async fn media_failed(
        &self,
        tenant: &TenantId,
        key: &str,
        mut info: MediaInfo,
        reason: &str,
    ) -> Result<Outcome, StoreError> {
        tracing::warn!(tenant = %tenant, message_key = %key, reason, "media fetch failed");
        info.status = MediaStatus::Failed;
        info.reason = Some(reason.to_owned());
        self.store.set_media(tenant, key, &info).await?;
        Ok(Outcome::Done)
    }

    /// A failed request to the provider: counted against the channel's hourly budget; retried
    /// with backoff unless permanent or out of attempts.
    async fn media_request_failed(
        &self,
        at: &Attempt<'_>,
        info: MediaInfo,
        failure: Failure,
        title: &str,
    ) -> Result<Outcome, StoreError> {
        let Attempt {
            tenant,
            key,
            channel,
            receives,
        } = *at;
        let hour = self.now().div_euclid(3600);
        let n = self.store.add_media_failure(channel, hour).await?;
        metrics::counter!("relay_media_failures_total").increment(1);
        tracing::warn!(tenant = %tenant, message_key = %key, failures_this_hour = n, "media request failed: {title}");
        if failure == Failure::Permanent {
            return self.media_failed(tenant, key, info, title).await;
        }
        if receives >= self.policy.send_attempts {
            let reason = format!("gave up after {receives} attempts: {title}");
            return self.media_failed(tenant, key, info, &reason).await;
        }
        Ok(Outcome::RetryAfter(self.policy.backoff(receives)))
    }

    pub(crate) async fn fetch_media(
        &self,
        tenant: &TenantId,
        contact_id: &ContactId,
        key: &str,
        receives: u32,
    ) -> Result<Outcome, StoreError> {
        let now = self.now();
        let Some(message) = self.store.message_by_wamid(tenant, key, now).await? else {
            return Ok(Outcome::Done);
        };
        let Some(info) = message.media.clone() else {
            return Ok(Outcome::Done);
        };
        if info.status != MediaStatus::Pending {
            return Ok(Outcome::Done);
        }
        let Some(want) = expected(&message.content) else {
            return self
                .media_failed(tenant, key, info, "the message names no media id")
                .await;
        };
        let Some(contact) = self.store.contact(tenant, contact_id, now).await? else {
            return Ok(Outcome::Done);
        };
        let channel = match contact.phone_number_id.as_deref() {
            Some(pnid) => self.directory.channel(pnid).await?,
            None => None,
        };
        let Some(channel) = channel.filter(|c| &c.tenant_id == tenant) else {
            return self
                .media_failed(tenant, key, info, "the contact's channel is gone")
                .await;
        };
        let pnid = channel.phone_number_id.clone();
        let at = Attempt {
            tenant,
            key,
            channel: &pnid,
            receives,
        };
        let hour = now.div_euclid(3600);
        if self.store.media_failures(&pnid, hour).await? >= MEDIA_FAILURE_BUDGET {
            // Wait for the next hour (with jitter) rather than get the number blocked.
            let wait = (hour + 1) * 3600 - now + (now % 60);
            tracing::info!(tenant = %tenant, message_key = %key, wait_secs = wait, "media fetches paused for this channel");
            return Ok(Outcome::RetryAfter(Duration::from_secs(wait.max(1) as u64)));
        }

        let located = match self.whatsapp.media_url(&channel, &want.wa_media_id).await {
            Ok(u) => u,
            Err(e) => {
                // Meta answers an unknown or expired media id with error 100 (HTTP 404).
                let title = if matches!(e.error.code, 100 | 404) {
                    "the media id is unknown or expired (WhatsApp keeps webhook media 7 days)"
                        .to_owned()
                } else {
                    e.error.title.clone().unwrap_or_default()
                };
                return self
                    .media_request_failed(&at, info, e.failure, &title)
                    .await;
            }
        };
        if located.file_size.is_some_and(|n| n > self.max_media_bytes) {
            let reason = format!("larger than the limit of {} bytes", self.max_media_bytes);
            return self.media_failed(tenant, key, info, &reason).await;
        }
        let mut resp = match self.whatsapp.download(&channel, &located.url).await {
            Ok(r) => r,
            Err(e) => {
                let title = e.error.title.clone().unwrap_or_default();
                return self
                    .media_request_failed(&at, info, e.failure, &title)
                    .await;
            }
        };

        let sealer = self
            .keys
            .contact_sealer(tenant, contact_id, message.expires_at)
            .await?;
        let object = object_key(tenant, contact_id.as_str(), &info.media_id);
        let mut writer = self
            .blobs
            .begin(&object)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut file = FileSealer::new(sealer, &info.media_id);
        let mut size: u64 = 0;
        // A photo or PDF is kept (up to the scan limit) to read its E-Rezept codes.
        let scan_mime = want
            .mime_type
            .clone()
            .or(located.mime_type.clone())
            .filter(|m| relay_scan::scannable(m));
        let mut copy: Option<Vec<u8>> = scan_mime.as_ref().map(|_| Vec::new());
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(_) => {
                    writer.abort().await;
                    return self
                        .media_request_failed(
                            &at,
                            info,
                            Failure::Transient,
                            "the download broke off",
                        )
                        .await;
                }
            };
            size += chunk.len() as u64;
            if size > self.max_media_bytes {
                writer.abort().await;
                let reason = format!("larger than the limit of {} bytes", self.max_media_bytes);
                return self.media_failed(tenant, key, info, &reason).await;
            }
            if let Some(c) = &mut copy {
                if c.len() + chunk.len() <= self.scan_limits.max_bytes {
                    c.extend_from_slice(&chunk);
                } else {
                    copy = None;
                }
            }
            let sealed = file.update(&chunk);
            if !sealed.is_empty()
                && let Err(e) = writer.write(sealed).await
            {
                writer.abort().await;
                return Err(StoreError::Unavailable(e.to_string()));
            }
        }
        let (tail, size, hash) = file.finish();
        let claimed = want.sha256.as_deref().or(located.sha256.as_deref());
        if claimed.is_some_and(|c| !hash_matches(c, &hash)) {
            writer.abort().await;
            return self
                .media_failed(tenant, key, info, "the file does not match its SHA-256")
                .await;
        }
        writer
            .write(tail)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if let Err(e) = writer.finish().await {
            return Err(StoreError::Unavailable(e.to_string()));
        }
        let found = match (copy, scan_mime) {
            (Some(bytes), Some(mime)) => self.read_codes(tenant, key, bytes, mime).await,
            _ => Vec::new(),
        };
        let mut object_key = Some(object);
        if !found.is_empty() {
            let deleted = self
                .prescriptions_found(tenant, contact_id, &message, &found)
                .await?;
            if deleted {
                if let Some(k) = &object_key {
                    self.blobs
                        .delete(k)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                }
                object_key = None;
            }
        }
        if object_key.is_none() {
            let stored = MediaInfo {
                status: MediaStatus::Deleted,
                mime_type: want
                    .mime_type
                    .or(located.mime_type)
                    .or(info.mime_type.clone()),
                size: Some(size),
                reason: None,
                object_key: None,
                ..info
            };
            self.store.set_media(tenant, key, &stored).await?;
            tracing::info!(tenant = %tenant, message_key = %key, "prescription file deleted after its codes were read");
            return Ok(Outcome::Done);
        }
        let object = object_key.unwrap_or_default();
        let stored = MediaInfo {
            status: MediaStatus::Available,
            // The webhook's type first: it is what the customer's phone sent.
            mime_type: want
                .mime_type
                .or(located.mime_type)
                .or(info.mime_type.clone()),
            size: Some(size),
            reason: None,
            object_key: Some(object),
            ..info
        };
        self.store.set_media(tenant, key, &stored).await?;
        tracing::info!(tenant = %tenant, message_key = %key, bytes = size, "media stored");
        Ok(Outcome::Done)
    }
}

impl Sender {
    /// The E-Rezept tokens in a fetched photo or PDF, read on a blocking thread within the scan
    /// limits. A file that cannot be read gives none: it is kept all the same.
    async fn read_codes(
        &self,
        tenant: &TenantId,
        key: &str,
        bytes: Vec<u8>,
        mime: String,
    ) -> Vec<relay_core::erezept::Prescription> {
        let limits = self.scan_limits;
        match tokio::task::spawn_blocking(move || relay_scan::scan(&bytes, &mime, &limits)).await {
            Ok(Ok(found)) => {
                if !found.is_empty() {
                    tracing::info!(tenant = %tenant, message_key = %key, count = found.len(), "E-Rezept codes read");
                }
                found
            }
            Ok(Err(e)) => {
                // The reason names limits and formats, never content.
                tracing::info!(tenant = %tenant, message_key = %key, reason = %e, "file not read for codes");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(tenant = %tenant, message_key = %key, "reading codes failed");
                Vec::new()
            }
        }
    }

    /// Records the tokens of a message's file (once per message, without those the contact
    /// sent before) and queues their `prescription.received` forward. True if the tenant has
    /// such files deleted once read.
    async fn prescriptions_found(
        &self,
        tenant: &TenantId,
        contact: &ContactId,
        message: &relay_core::records::StoredMessage,
        found: &[relay_core::erezept::Prescription],
    ) -> Result<bool, StoreError> {
        let Some(t) = self.directory.tenant(tenant).await? else {
            return Ok(false);
        };
        let new = relay_core::prescriptions::record(
            self.store.as_ref(),
            (tenant, contact),
            &message.wamid_key,
            found,
            &t.policy,
            (self.now(), message.expires_at),
        )
        .await?;
        if !new.is_empty()
            && t.forward_url.is_some()
            && let Some(queue) = &self.outbound
        {
            let job = relay_core::prescriptions::forward(&t, message, contact, &new);
            queue
                .enqueue_jobs(&[job])
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        Ok(t.policy.delete_prescription_images_after_decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_in_base64_or_hex() {
        let h: [u8; 32] = std::array::from_fn(|i| i as u8);
        let b64 = base64::engine::general_purpose::STANDARD.encode(h);
        assert!(hash_matches(&b64, &h));
        assert!(hash_matches(&hex::encode(h), &h));
        assert!(hash_matches(&hex::encode(h).to_uppercase(), &h));
        assert!(!hash_matches("", &h));
        assert!(!hash_matches(&hex::encode([0u8; 32]), &h));
    }
}
