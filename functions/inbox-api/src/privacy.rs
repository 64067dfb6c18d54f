//! GDPR export (Art. 15, 20) and erasure (Art. 17) of a contact.

use super::*;

/// `GET /v1/contacts/{contact_id}/export`: everything about one contact, decrypted, as one
/// JSON document (GDPR Art. 15 and 20).
pub(crate) async fn export_contact(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
) -> Result<Response, ProblemResponse> {
    let not_found = || problem(404, "not-found", "No such contact");
    let contact = ContactId::parse(&contact_id).map_err(|_| not_found())?;
    let doc = state
        .privacy
        .export(&tenant, &contact, state.clock.now())
        .await
        .map_err(store_problem)?
        .ok_or_else(not_found)?;
    tracing::info!(tenant = %tenant, contact = %contact, "contact exported");
    let mut response = ok_json(doc);
    if let Ok(v) =
        header::HeaderValue::from_str(&format!("attachment; filename=\"{contact}.json\""))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `DELETE /v1/contacts/{contact_id}`: erases the contact (GDPR Art. 17) and returns the
/// receipt. Idempotent: erasing an erased or unknown contact returns a receipt with nothing
/// deleted.
pub(crate) async fn erase_contact(
    State(state): State<Inbox>,
    Authenticated(tenant): Authenticated,
    Path(contact_id): Path<String>,
) -> Result<Response, ProblemResponse> {
    let contact =
        ContactId::parse(&contact_id).map_err(|_| problem(404, "not-found", "No such contact"))?;
    let receipt = state
        .privacy
        .erase(&tenant, &contact, state.clock.now())
        .await
        .map_err(store_problem)?;
    Ok(ok_json(serde_json::to_value(&receipt).unwrap_or_default()))
}
