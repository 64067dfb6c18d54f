-- The tenants' quick replies (stock answers staff insert into the composer).
CREATE TABLE quick_replies (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT;
