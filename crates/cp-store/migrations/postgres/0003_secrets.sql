-- Secrets, integrations and custom integrations (PostgreSQL), with the logs of every read of a
-- secret value or integration credential. Keep in step with ../sqlite/0003_secrets.sql.
-- Values and credentials are stored only as AES-256-GCM ciphertexts (nonce || ciphertext || tag)
-- under the server's master key, which never enters the database.

CREATE TABLE secrets (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    ciphertext BYTEA NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_rotated_at TIMESTAMPTZ,
    CONSTRAINT secrets_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX secrets_org ON secrets(organization_id, id);

-- Audit rows outlive the secret and the key (no foreign keys to them), not the organization.
CREATE TABLE secret_access_log (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    secret_id UUID NOT NULL,
    secret_name TEXT NOT NULL,
    key_id UUID NOT NULL,
    key_name TEXT NOT NULL,
    role TEXT NOT NULL,
    purpose TEXT NOT NULL,
    accessed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX secret_access_log_name ON secret_access_log(organization_id, secret_name, id);

CREATE TABLE integrations (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    integration_type TEXT NOT NULL,
    description TEXT,
    config JSONB NOT NULL DEFAULT '{}',
    credentials BYTEA,
    status TEXT NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    credentials_updated_at TIMESTAMPTZ,
    CONSTRAINT integrations_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX integrations_org ON integrations(organization_id, id);
CREATE INDEX integrations_org_type ON integrations(organization_id, integration_type);

CREATE TABLE integration_access_log (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    integration_id UUID NOT NULL,
    integration_name TEXT NOT NULL,
    integration_type TEXT NOT NULL,
    key_id UUID NOT NULL,
    key_name TEXT NOT NULL,
    role TEXT NOT NULL,
    purpose TEXT NOT NULL,
    accessed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX integration_access_log_integration ON integration_access_log(organization_id, integration_id, id);

CREATE TABLE custom_integrations (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    integration_type TEXT NOT NULL DEFAULT 'custom',
    description TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    config JSONB NOT NULL DEFAULT '{}',
    tags JSONB NOT NULL DEFAULT '[]',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT custom_integrations_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX custom_integrations_org ON custom_integrations(organization_id, id);
