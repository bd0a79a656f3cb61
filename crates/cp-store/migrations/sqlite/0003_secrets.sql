-- Secrets, integrations and custom integrations (SQLite), with the logs of every read of a
-- secret value or integration credential. Keep in step with ../postgres/0003_secrets.sql.
-- Values and credentials are stored only as AES-256-GCM ciphertexts (nonce || ciphertext || tag)
-- under the server's master key, which never enters the database.

CREATE TABLE secrets (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    ciphertext BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_rotated_at TEXT,
    CONSTRAINT secrets_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX secrets_org ON secrets(organization_id, id);

-- Audit rows outlive the secret and the key (no foreign keys to them), not the organization.
CREATE TABLE secret_access_log (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    secret_id BLOB NOT NULL,
    secret_name TEXT NOT NULL,
    key_id BLOB NOT NULL,
    key_name TEXT NOT NULL,
    role TEXT NOT NULL,
    purpose TEXT NOT NULL,
    accessed_at TEXT NOT NULL
);
CREATE INDEX secret_access_log_name ON secret_access_log(organization_id, secret_name, id);

CREATE TABLE integrations (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    integration_type TEXT NOT NULL,
    description TEXT,
    config TEXT NOT NULL DEFAULT '{}',
    credentials BLOB,
    status TEXT NOT NULL DEFAULT 'active',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    credentials_updated_at TEXT,
    CONSTRAINT integrations_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX integrations_org ON integrations(organization_id, id);
CREATE INDEX integrations_org_type ON integrations(organization_id, integration_type);

CREATE TABLE integration_access_log (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    integration_id BLOB NOT NULL,
    integration_name TEXT NOT NULL,
    integration_type TEXT NOT NULL,
    key_id BLOB NOT NULL,
    key_name TEXT NOT NULL,
    role TEXT NOT NULL,
    purpose TEXT NOT NULL,
    accessed_at TEXT NOT NULL
);
CREATE INDEX integration_access_log_integration ON integration_access_log(organization_id, integration_id, id);

CREATE TABLE custom_integrations (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    integration_type TEXT NOT NULL DEFAULT 'custom',
    description TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    config TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT custom_integrations_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX custom_integrations_org ON custom_integrations(organization_id, id);
