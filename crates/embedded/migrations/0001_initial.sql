-- Schema 1: the tables as of the first release (before numbered migrations). Every statement
-- is IF NOT EXISTS, so a data directory made before migrations existed (user_version 0, these
-- tables present) is brought to version 1 unchanged.
CREATE TABLE IF NOT EXISTS contacts (
    tenant TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    name TEXT,
    wa_id TEXT,
    user_id TEXT,
    username TEXT,
    last_inbound_at INTEGER,
    last_message_at INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0,
    phone_number_id TEXT,
    opted_out INTEGER NOT NULL DEFAULT 0,
    away_replied_at INTEGER,
    send_backoff_until INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, contact_id)
);
CREATE INDEX IF NOT EXISTS contacts_by_activity ON contacts (tenant, last_message_at DESC, contact_id DESC);

CREATE TABLE IF NOT EXISTS identities (
    tenant TEXT NOT NULL,
    identity_key TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, identity_key)
);

CREATE TABLE IF NOT EXISTS messages (
    tenant TEXT NOT NULL,
    wamid_key TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    status_rank INTEGER,
    body TEXT NOT NULL,
    -- Outbound: the sent message's wamid key (statuses find it by this), the send lease.
    alias_key TEXT,
    send_lease_until INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, wamid_key)
);
CREATE INDEX IF NOT EXISTS messages_by_contact ON messages (tenant, contact_id, timestamp DESC, wamid_key DESC);
CREATE INDEX IF NOT EXISTS messages_by_alias ON messages (tenant, alias_key);

CREATE TABLE IF NOT EXISTS consent (
    tenant TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    key TEXT NOT NULL,
    at INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, contact_id, key)
);

CREATE TABLE IF NOT EXISTS idempotency (
    tenant TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    message_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key_hash)
);

CREATE TABLE IF NOT EXISTS statuses (
    tenant TEXT NOT NULL,
    wamid_key TEXT NOT NULL,
    status TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, wamid_key, status)
);

CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
);

CREATE TABLE IF NOT EXISTS quarantine (
    key TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_by_visibility ON queue (queue, visible_at_ms, id);
-- Deleting or delaying a received message finds it by its receipt without a scan of the
-- backlog (a scan per delete made the router slower the longer the queue grew).
CREATE INDEX IF NOT EXISTS queue_by_receipt ON queue (receipt) WHERE receipt IS NOT NULL;

-- Files the pharmacy uploaded to send (POST /v1/media).
CREATE TABLE IF NOT EXISTS uploads (
    tenant TEXT NOT NULL,
    media_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    body TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, media_id)
);

-- Failed media requests per channel and hour (360dialog blocks a number after more than five).
CREATE TABLE IF NOT EXISTS media_failures (
    phone_number_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (phone_number_id, hour)
);

-- Data keys, wrapped under the master key file. Deleting a row shreds the data sealed under it.
CREATE TABLE IF NOT EXISTS data_keys (
    tenant TEXT NOT NULL,
    keyref TEXT NOT NULL,
    key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tenant, keyref)
);

-- The audit log: rows are never updated, and deleted only once expired.
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    result INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, at_ms DESC);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_early_delete BEFORE DELETE ON audit
WHEN OLD.expires_at > CAST(strftime('%s', 'now') AS INTEGER)
BEGIN SELECT RAISE(ABORT, 'audit entries are kept until they expire'); END;
