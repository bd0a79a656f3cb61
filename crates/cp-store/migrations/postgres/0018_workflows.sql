-- Workflows (API §7): each one's current definition, and every version of it (the current
-- one included), written in the same transaction; a run names the version it started with.
-- Keep in step with ../sqlite/0018_workflows.sql.
CREATE TABLE workflows (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT,
    project_id UUID REFERENCES projects(id) ON DELETE SET NULL,
    tags JSONB NOT NULL DEFAULT '[]',
    version BIGINT NOT NULL,
    -- {inputs_schema, steps, default_worker_queue_id}
    definition JSONB NOT NULL,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT workflows_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX workflows_org ON workflows(organization_id, id);

CREATE TABLE workflow_versions (
    workflow_id UUID NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    organization_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    definition JSONB NOT NULL,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow_id, version)
);
