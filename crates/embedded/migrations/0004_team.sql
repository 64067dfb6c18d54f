-- The web inbox's team state of a conversation (assignee, labels, closed) and internal notes.
-- Both belong to the contact: sealed under its key, erased with it.
CREATE TABLE team_states (
    tenant TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, contact_id)
) STRICT;

CREATE TABLE notes (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT;
CREATE INDEX notes_by_contact ON notes (tenant, contact_id, created_at);
