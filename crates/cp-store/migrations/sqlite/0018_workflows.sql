-- Workflows (API §7): each one's current definition, and every version of it (the current
-- one included), written in the same transaction; a run names the version it started with.
-- Keep in step with ../postgres/0018_workflows.sql.
CREATE TABLE workflows (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    project_id BLOB REFERENCES projects(id) ON DELETE SET NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    version INTEGER NOT NULL,
    -- {inputs_schema, steps, default_worker_queue_id}
    definition TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT workflows_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX workflows_org ON workflows(organization_id, id);

CREATE TABLE workflow_versions (
    workflow_id BLOB NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    organization_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    definition TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);
