-- E-Rezept tokens found in messages (text, photos, PDFs), one row per message; kept for the
-- tenant's prescription_retention_days (the sweep deletes them), sealed under the contact's
-- key, erased with the contact.
CREATE TABLE prescriptions (
    tenant TEXT NOT NULL,
    message_key TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    body TEXT NOT NULL,
    found_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, message_key)
) STRICT;
CREATE INDEX prescriptions_by_contact ON prescriptions (tenant, contact_id, found_at);
