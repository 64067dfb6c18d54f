-- What WhatsApp charges: each message counted once (usage_marks), per tenant, month
-- (Europe/Berlin), category and type (usage). Counts hold no personal data; the marks expire
-- with the message.
CREATE TABLE usage_marks (
    tenant TEXT NOT NULL,
    wamid_key TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, wamid_key)
) STRICT;

CREATE TABLE usage (
    tenant TEXT NOT NULL,
    month TEXT NOT NULL,
    category TEXT NOT NULL,
    pricing_type TEXT NOT NULL,
    messages INTEGER NOT NULL,
    billable INTEGER NOT NULL,
    PRIMARY KEY (tenant, month, category, pricing_type)
) STRICT;
