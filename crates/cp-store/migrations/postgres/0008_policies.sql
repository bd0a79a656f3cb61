-- Rego policies (API §4). `version` moves when the content changes; the compiled form is
-- cached in memory per (id, version).
CREATE TABLE policies (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    policy_content TEXT NOT NULL,
    package TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    tags JSONB NOT NULL DEFAULT '[]',
    metadata JSONB NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT policies_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX policies_org ON policies(organization_id, id);
