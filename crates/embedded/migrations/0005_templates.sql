-- The tenants' message templates (listed from the provider by `relay templates sync`).
CREATE TABLE templates (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    language TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, name, language)
) STRICT;
