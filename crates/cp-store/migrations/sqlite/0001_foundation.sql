-- Foundation schema (SQLite). Ids are UUIDv7 stored as 16-byte BLOBs, timestamps RFC 3339 TEXT,
-- JSON as TEXT. Keep in step with ../postgres/0001_foundation.sql: same tables, columns and constraints.

CREATE TABLE organizations (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    rate_limit_tier TEXT NOT NULL DEFAULT 'standard',
    rate_limit_per_minute INTEGER,
    policy_enforcement TEXT NOT NULL DEFAULT 'blocking',
    event_retention_days INTEGER NOT NULL DEFAULT 30,
    webhook_allow_private_targets BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    expires_at TEXT,
    revoked_at TEXT
);
CREATE INDEX api_keys_org ON api_keys(organization_id, id);

CREATE TABLE projects (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    description TEXT,
    goals TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active',
    visibility TEXT NOT NULL DEFAULT 'private',
    default_model TEXT,
    policy_ids TEXT NOT NULL DEFAULT '[]',
    restrict_to_environment BOOLEAN NOT NULL DEFAULT FALSE,
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    archived_at TEXT,
    CONSTRAINT projects_org_name_uniq UNIQUE (organization_id, name),
    CONSTRAINT projects_org_key_uniq UNIQUE (organization_id, key)
);
CREATE INDEX projects_org ON projects(organization_id, id);
CREATE UNIQUE INDEX projects_one_default ON projects(organization_id) WHERE is_default;

-- Agents and teams get their full columns with the catalog; the rows exist now so that
-- project membership can reference them and cascade when they are deleted.
CREATE TABLE agents (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT agents_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX agents_org ON agents(organization_id, id);

CREATE TABLE teams (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT teams_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX teams_org ON teams(organization_id, id);

CREATE TABLE project_agents (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    agent_id BLOB NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    role TEXT,
    added_by TEXT,
    added_at TEXT NOT NULL,
    CONSTRAINT project_agents_pair_uniq UNIQUE (project_id, agent_id)
);
CREATE INDEX project_agents_agent ON project_agents(agent_id);

CREATE TABLE project_teams (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id BLOB NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    team_id BLOB NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    role TEXT,
    added_by TEXT,
    added_at TEXT NOT NULL,
    CONSTRAINT project_teams_pair_uniq UNIQUE (project_id, team_id)
);
CREATE INDEX project_teams_team ON project_teams(team_id);

CREATE TABLE environments (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    settings TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'active',
    execution_environment TEXT NOT NULL DEFAULT '{}',
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT environments_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX environments_org ON environments(organization_id, id);
CREATE UNIQUE INDEX environments_one_default ON environments(organization_id) WHERE is_default;

-- Idempotency-Key records: the first answer to a creating POST, replayed for 24 h.
CREATE TABLE idempotency_keys (
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code INTEGER,
    content_type TEXT,
    response_body BLOB,
    created_at TEXT NOT NULL,
    PRIMARY KEY (organization_id, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
