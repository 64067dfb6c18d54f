//! Files served back to the pharmacy (the inbox API's downloads, the web inbox's inline
//! images): found by media id within a tenant, opened chunk by chunk as they stream, with a
//! type and `Content-Disposition` that cannot make a customer's file run in the page.

use crate::{ProblemResponse, detailed, problem};
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::header;
use relay_core::crypto::Keyring;
use relay_core::ids::{ContactId, TenantId};
use relay_core::media::BlobStore;
use relay_core::ports::{MessageStore, StoreError};
use serde_json::Value;

/// Where files and their records are.
pub struct FileSource<'a> {
    /// A sealing store (records are personal data).
    pub store: &'a dyn MessageStore,
    pub blobs: &'a dyn BlobStore,
    pub keys: &'a Keyring,
    /// The largest file served in one response (Lambda's response limit), if any.
    pub max_response_bytes: Option<u64>,
    pub now: i64,
}

fn store_unavailable(e: StoreError) -> ProblemResponse {
    tracing::error!(error = %e, "store read failed");
    problem(
        503,
        "store-unavailable",
        "The inbox store is unavailable; retry later",
    )
}

/// A MIME type safe to send back as Content-Type, else `application/octet-stream`.
pub fn safe_mime(m: Option<&str>) -> String {
    m.map(|m| {
        m.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
    .filter(|m| {
        m.len() <= 100
            && m.split_once('/')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
    })
    .unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// A file name for Content-Disposition: the document's own name reduced to safe characters.
pub fn safe_filename(name: Option<&str>, media_id: &str) -> String {
    let cleaned: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_ ".contains(*c))
        .take(100)
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        media_id.to_owned()
    } else {
        cleaned
    }
}

/// How a served file is to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Always a download (the API).
    Attachment,
    /// Shown in the page when it is an image, audio or video file of a type browsers render
    /// safely (the web inbox); everything else downloads.
    InlineMedia,
}

/// The types a page may show inline: never HTML, SVG, XML or anything scriptable.
fn renders_safely(mime: &str) -> bool {
    matches!(
        mime,
        "image/jpeg"
            | "image/png"
            | "image/webp"
            | "image/gif"
            | "audio/ogg"
            | "audio/mpeg"
            | "audio/mp4"
            | "audio/aac"
            | "audio/amr"
            | "video/mp4"
            | "video/3gpp"
    )
}

/// A message's or upload's file as a streamed response, decrypted, with a safe type and
/// `Content-Disposition`; and the contact it belongs to (for the audit log). An error names
/// the contact too once it is known.
pub async fn file_response(
    src: &FileSource<'_>,
    tenant: &TenantId,
    media_id: &str,
    disposition: Disposition,
) -> Result<(Response, ContactId), (ProblemResponse, Option<ContactId>)> {
    let mut contact = None;
    media_response_inner(src, tenant, media_id, disposition, &mut contact)
        .await
        .map_err(|p| (p, contact))
}

async fn media_response_inner(
    src: &FileSource<'_>,
    tenant: &TenantId,
    media_id: &str,
    disposition: Disposition,
    known_contact: &mut Option<ContactId>,
) -> Result<(Response, ContactId), ProblemResponse> {
    use relay_core::media::{FileOpener, MediaStatus, message_key_of};
    let tenant = tenant.clone();
    let media_id = media_id.to_owned();
    let not_found = || problem(404, "not-found", "No such media");
    let now = src.now;
    // A file of a message (`md_…`), or one the pharmacy uploaded (`mu_…`).
    let (media, contact_id, filename) = if media_id.starts_with(relay_core::outbound::UPLOAD_PREFIX)
        && media_id.len() <= 64
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        let upload = src
            .store
            .upload(&tenant, &media_id, now)
            .await
            .map_err(store_unavailable)?
            .ok_or_else(not_found)?;
        (upload.media, upload.contact_id, upload.filename)
    } else {
        let key = message_key_of(&media_id).ok_or_else(not_found)?;
        let message = src
            .store
            .message_by_wamid(&tenant, key, now)
            .await
            .map_err(store_unavailable)?
            .ok_or_else(not_found)?;
        let media = message.media.clone().ok_or_else(not_found)?;
        let filename = message
            .content
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|m| m.get("filename"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        (media, message.contact_id, filename)
    };
    if media.media_id != media_id {
        return Err(not_found());
    }
    *known_contact = Some(contact_id.clone());
    match media.status {
        MediaStatus::Pending => {
            let mut r =
                problem(409, "media-pending", "The file is still being fetched").into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return Ok((r, contact_id));
        }
        MediaStatus::Failed => {
            return Err(detailed(
                410,
                "media-unavailable",
                "The file could not be fetched from WhatsApp",
                media.reason.clone().unwrap_or_default(),
            ));
        }
        MediaStatus::Deleted => {
            return Err(problem(
                410,
                "media-deleted",
                "The file was deleted once its E-Rezept codes were read",
            ));
        }
        MediaStatus::Available => {}
    }
    let size = media.size.unwrap_or(0);
    if let Some(max) = src.max_response_bytes
        && size > max
    {
        return Err(detailed(
            413,
            "media-too-large",
            "The file is larger than this deployment serves in one response",
            format!("{size} bytes; the limit is {max}"),
        ));
    }
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "media read failed");
        problem(
            503,
            "store-unavailable",
            "The file store is unavailable; retry later",
        )
    };
    let object = media.object_key.clone().ok_or_else(not_found)?;
    let mut reader = src
        .blobs
        .open(&object)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(not_found)?;
    let opener = match FileOpener::new(src.keys, &tenant, &media.media_id, size, reader.as_mut())
        .await
    {
        Ok(o) => o,
        // Erased meanwhile: gone.
        Err(relay_core::media::MediaError::Crypto(relay_core::crypto::CryptoError::Destroyed)) => {
            return Err(not_found());
        }
        Err(e) => return Err(unavailable(&e)),
    };
    let stream = futures_util::stream::unfold(
        (reader, opener, false),
        |(mut reader, mut opener, failed)| async move {
            if failed {
                return None;
            }
            match opener.next(reader.as_mut()).await {
                Ok(Some(chunk)) => Some((
                    Ok::<_, std::io::Error>(Bytes::from(chunk)),
                    (reader, opener, false),
                )),
                Ok(None) => None,
                Err(e) => {
                    // The headers are out already: end the body short (its length will not
                    // match, so the client sees a broken transfer, never a wrong file).
                    tracing::error!(error = %e, "media stream failed");
                    Some((
                        Err(std::io::Error::other("media stream failed")),
                        (reader, opener, true),
                    ))
                }
            }
        },
    );
    tracing::info!(tenant = %tenant, contact = %contact_id, bytes = size, "media served");
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let h = response.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&safe_mime(media.mime_type.as_deref())) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    let mime = safe_mime(media.mime_type.as_deref());
    let how = match disposition {
        Disposition::InlineMedia if renders_safely(&mime) => "inline",
        _ => "attachment",
    };
    if let Ok(v) = header::HeaderValue::from_str(&format!(
        "{how}; filename=\"{}\"",
        safe_filename(filename.as_deref(), &media.media_id)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    // A file is never a page: no script, no plugin, no framing, even if opened directly.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; sandbox; frame-ancestors 'none'"),
    );
    Ok((response, contact_id))
}
