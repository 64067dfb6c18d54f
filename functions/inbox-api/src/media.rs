//! Files: a message's media streamed back, uploads for replies.

use super::*;
use relay_core::ports::store_roles::*;

/// A MIME type safe to send back as Content-Type, else `application/octet-stream`.
pub(crate) fn safe_mime(m: Option<&str>) -> String {
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
pub(crate) fn safe_filename(name: Option<&str>, media_id: &str) -> String {
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

/// `GET /v1/media/{media_id}`: the file of a message, opened and streamed.
pub(crate) async fn get_media(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(media_id): Path<String>,
    axum::Extension(target): axum::Extension<AuditTarget>,
) -> Result<Response, ProblemResponse> {
    let (response, contact) = media_response(&state, &tenant, &media_id, Disposition::Attachment)
        .await
        .map_err(|(p, contact)| {
            if let Some(c) = contact {
                *target.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.to_string());
            }
            p
        })?;
    *target.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(contact.to_string());
    Ok(response)
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
        "image/jpeg" | "image/png" | "image/webp" | "image/gif"
            | "audio/ogg" | "audio/mpeg" | "audio/mp4" | "audio/aac" | "audio/amr"
            | "video/mp4" | "video/3gpp"
    )
}

/// A message's or upload's file as a streamed response, decrypted, with a safe type and
/// `Content-Disposition`; and the contact it belongs to (for the audit log). An error names
/// the contact too once it is known.
pub async fn media_response(
    state: &Inbox,
    tenant: &TenantId,
    media_id: &str,
    disposition: Disposition,
) -> Result<(Response, ContactId), (ProblemResponse, Option<ContactId>)> {
    let mut contact = None;
    media_response_inner(state, tenant, media_id, disposition, &mut contact)
        .await
        .map_err(|p| (p, contact))
}

async fn media_response_inner(
    state: &Inbox,
    tenant: &TenantId,
    media_id: &str,
    disposition: Disposition,
    known_contact: &mut Option<ContactId>,
) -> Result<(Response, ContactId), ProblemResponse> {
    use relay_core::media::{FileOpener, MediaStatus, message_key_of};
    let tenant = tenant.clone();
    let media_id = media_id.to_owned();
    let not_found = || problem(404, "not-found", "No such media");
    let now = state.clock.now();
    // A file of a message (`md_…`), or one the pharmacy uploaded (`mu_…`).
    let (media, contact_id, filename) = if media_id.starts_with(relay_core::outbound::UPLOAD_PREFIX)
        && media_id.len() <= 64
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        let upload = state
            .store
            .upload(&tenant, &media_id, now)
            .await
            .map_err(store_problem)?
            .ok_or_else(not_found)?;
        (upload.media, upload.contact_id, upload.filename)
    } else {
        let key = message_key_of(&media_id).ok_or_else(not_found)?;
        let message = state
            .store
            .message_by_wamid(&tenant, key, now)
            .await
            .map_err(store_problem)?
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
        MediaStatus::Available => {}
    }
    let size = media.size.unwrap_or(0);
    if let Some(max) = state.max_media_response_bytes
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
    let mut reader = state
        .blobs
        .open(&object)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(not_found)?;
    let opener = match FileOpener::new(
        &state.privacy.keys,
        &tenant,
        &media.media_id,
        size,
        reader.as_mut(),
    )
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

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    contact_id: Option<String>,
    filename: Option<String>,
}

/// The file types WhatsApp takes for sending, and each one's size limit.
pub(crate) fn upload_limit(mime: &str) -> Option<usize> {
    const MB: usize = 1024 * 1024;
    match mime {
        "image/jpeg" | "image/png" => Some(5 * MB),
        "audio/aac" | "audio/mp4" | "audio/mpeg" | "audio/amr" | "audio/ogg" | "video/mp4"
        | "video/3gpp" => Some(16 * MB),
        "application/pdf" | "text/plain" | "application/msword" => Some(MAX_UPLOAD_BYTES),
        m if m.starts_with("application/vnd.openxmlformats-officedocument.")
            || m.starts_with("application/vnd.ms-") =>
        {
            Some(MAX_UPLOAD_BYTES)
        }
        _ => None,
    }
}

/// `POST /v1/media?contact_id=…&filename=…` with the file as the body and its Content-Type:
/// stores it sealed under the contact's key, for a reply to send by `media_id`.
pub(crate) async fn upload_media(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    axum::Extension(target): axum::Extension<AuditTarget>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ProblemResponse> {
    use relay_core::media::{FileSealer, MediaInfo, MediaStatus, object_key};
    let bad = |detail: &str| {
        detailed(
            400,
            "bad-query",
            "Invalid query parameters",
            detail.to_owned(),
        )
    };
    let Query(q) = query.map_err(|_| bad("the query string is malformed"))?;
    let contact = q
        .contact_id
        .as_deref()
        .and_then(|c| ContactId::parse(c).ok())
        .ok_or_else(|| bad("contact_id (the conversation the file is for) is required"))?;
    let filename = match q.filename {
        Some(f)
            if f.is_empty()
                || f.len() > 240
                || f.contains(['/', '\\'])
                || f.chars().any(char::is_control) =>
        {
            return Err(bad("filename must be a plain file name"));
        }
        other => other,
    };
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(problem(
                413,
                "too-large",
                "The file is larger than WhatsApp sends",
            ));
        }
        Err(_) => {
            return Err(problem(
                400,
                "unreadable-body",
                "The body could not be read",
            ));
        }
    };
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let Some(limit) = upload_limit(&mime) else {
        return Err(detailed(
            415,
            "unsupported-media-type",
            "WhatsApp does not send files of this type",
            "JPEG or PNG images, AAC/MP4/MPEG/AMR/OGG audio, MP4/3GPP video, PDF, text and Office documents",
        ));
    };
    if body.is_empty() {
        return Err(problem(400, "empty-body", "The file is empty"));
    }
    if body.len() > limit {
        return Err(detailed(
            413,
            "too-large",
            "The file is larger than WhatsApp sends",
            format!(
                "{} bytes; {mime} files may have at most {limit}",
                body.len()
            ),
        ));
    }
    let now = state.clock.now();
    let not_found = || problem(404, "not-found", "No such conversation");
    if state
        .store
        .conversation(&tenant, &contact, now)
        .await
        .map_err(store_problem)?
        .is_none()
    {
        return Err(not_found());
    }
    *target.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(contact.to_string());
    let retention = match state.directory.tenant(&tenant).await {
        Ok(Some(t)) => t.retention_secs(),
        _ => i64::from(relay_core::tenant::DEFAULT_RETENTION_DAYS) * 86_400,
    };
    let expires_at = now + retention;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|_| problem(503, "unavailable", "No randomness; retry"))?;
    let media_id = format!("{}{}", relay_core::outbound::UPLOAD_PREFIX, hex::encode(id));
    let sealer = state
        .privacy
        .keys
        .contact_sealer(&tenant, &contact, expires_at)
        .await
        .map_err(|e| store_problem(e.into()))?;
    let mut file = FileSealer::new(sealer, &media_id);
    let mut sealed = file.update(&body);
    let (tail, size, _) = file.finish();
    sealed.extend(tail);
    let key = object_key(&tenant, contact.as_str(), &media_id);
    let blob_error = |e: relay_core::media::BlobError| {
        tracing::error!(error = %e, "upload could not be stored");
        problem(
            503,
            "store-unavailable",
            "The file could not be stored; retry later",
        )
    };
    let mut writer = state.blobs.begin(&key).await.map_err(blob_error)?;
    writer.write(sealed).await.map_err(blob_error)?;
    writer.finish().await.map_err(blob_error)?;
    let upload = relay_core::records::Upload {
        media_id: media_id.clone(),
        contact_id: contact.clone(),
        media: MediaInfo {
            media_id: media_id.clone(),
            status: MediaStatus::Available,
            mime_type: Some(mime.clone()),
            size: Some(size),
            reason: None,
            object_key: Some(key),
        },
        filename,
        created_at: now,
        expires_at,
    };
    state
        .store
        .create_upload(&tenant, &upload)
        .await
        .map_err(store_problem)?;
    tracing::info!(tenant = %tenant, contact = %contact, bytes = size, "file uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"media_id": media_id, "mime_type": mime, "size": size, "expires_at": expires_at})),
    )
        .into_response())
}
