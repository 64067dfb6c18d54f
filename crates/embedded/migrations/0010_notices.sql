-- Pickup-ready notices, one per (contact, kind, order reference); due_at is set while a
-- reminder is owed (not collected, not yet reminded), for the sweep. Erased with the contact.
CREATE TABLE notices (
    tenant TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    due_at INTEGER,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, contact_id, kind, reference)
) STRICT;
CREATE INDEX notices_due ON notices (due_at) WHERE due_at IS NOT NULL;
