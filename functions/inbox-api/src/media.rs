//! Files: a message's media streamed back, uploads for replies.

use super::*;
use relay_core::ports::store_roles::*;
use relay_http::files::Disposition;

/// `GET /v1/media/{media_id}`: the file of a message, opened and streamed.
pub(crate) async fn get_media(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(media_id): Path<String>,
    axum::Extension(target): axum::Extension<AuditTarget>,
) -> Result<Response, ProblemResponse> {
    let source = relay_http::files::FileSource {
        store: state.store.as_ref(),
        blobs: state.blobs.as_ref(),
        keys: &state.privacy.keys,
        max_response_bytes: state.max_media_response_bytes,
        now: state.clock.now(),
    };
    let (response, contact) =
        relay_http::files::file_response(&source, &tenant, &media_id, Disposition::Attachment)
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

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    contact_id: Option<String>,
    filename: Option<String>,
}

/// The file types WhatsApp takes for sending, and each one's size limit.
pub(crate) fn upload_limit(mime: &str) -> Option<usize> {
    relay_core::media::upload_limit(mime, MAX_UPLOAD_BYTES)
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
    if let Some(max) = state.max_upload_bytes
        && body.len() > max
    {
        return Err(detailed(
            413,
            "too-large",
            "The file is larger than this deployment takes",
            format!(
                "{} bytes; uploads may have at most {max} here (a Lambda request carries 6 MB, base64-encoded)",
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
    let upload = relay_core::media::store_upload(
        &state.privacy.keys,
        state.blobs.as_ref(),
        state.store.as_ref(),
        &tenant,
        &contact,
        filename,
        &mime,
        &body,
        (now, expires_at),
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "upload could not be stored");
        problem(
            503,
            "store-unavailable",
            "The file could not be stored; retry later",
        )
    })?;
    let (media_id, size) = (upload.media_id, upload.media.size.unwrap_or(0));
    tracing::info!(tenant = %tenant, contact = %contact, bytes = size, "file uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"media_id": media_id, "mime_type": mime, "size": size, "expires_at": expires_at})),
    )
        .into_response())
}
