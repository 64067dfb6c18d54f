-- Staff accounts of the web inbox, their sessions and the sign-in throttle's counters.
CREATE TABLE staff (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    sessions_valid_after INTEGER NOT NULL
) STRICT;
CREATE INDEX staff_by_tenant ON staff (tenant, email);

CREATE TABLE staff_sessions (
    token_hash TEXT PRIMARY KEY,
    staff_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX staff_sessions_by_staff ON staff_sessions (staff_id);

CREATE TABLE sign_in_failures (
    key TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, bucket)
) STRICT;
