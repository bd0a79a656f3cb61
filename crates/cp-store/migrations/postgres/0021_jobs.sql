-- Jobs (API §7): an agent, team or workflow fired by a cron schedule, an inbound webhook or by
-- hand. The definition is one JSON document (`spec`); the columns beside it are what the
-- scheduler and the webhook route look up. Keep in step with ../sqlite/0021_jobs.sql.
CREATE TABLE jobs (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    trigger_type TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    spec JSONB NOT NULL,
    entity_name TEXT NOT NULL,
    status TEXT NOT NULL,
    paused_reason TEXT,
    -- Unix ms: when the schedule fires next (jitter included), and the due time it fires for.
    -- A replica claims a firing by moving both on with a conditional update.
    next_run_at BIGINT,
    next_due_at BIGINT,
    last_run_at TIMESTAMPTZ,
    last_status TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    webhook_path TEXT UNIQUE,
    -- Sealed with the master key; never listed.
    webhook_secret BYTEA,
    created_by TEXT NOT NULL,
    created_by_name TEXT NOT NULL,
    created_by_role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE INDEX jobs_org ON jobs(organization_id, id);
CREATE INDEX jobs_due ON jobs(next_run_at) WHERE enabled AND next_run_at IS NOT NULL;

-- Every firing: what fired it, and what it started (the execution or run has the firing's id)
-- or why nothing started. `work` is the rendered prompt or inputs, so a firing that waits
-- (buffered) or that a crash interrupted starts later as it was rendered.
CREATE TABLE job_firings (
    id UUID PRIMARY KEY NOT NULL,
    job_id UUID NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    trigger_source TEXT NOT NULL,
    status TEXT NOT NULL,
    work JSONB,
    execution_id UUID,
    workflow_run_id UUID,
    due_at BIGINT,
    fired_at TIMESTAMPTZ NOT NULL,
    error TEXT,
    missed_count BIGINT,
    delivery_id TEXT,
    -- Unix ms until which the replica that wrote a pending firing is starting it.
    lease_until BIGINT,
    UNIQUE (job_id, due_at),
    UNIQUE (job_id, delivery_id)
);
CREATE INDEX job_firings_job ON job_firings(job_id, id);
-- The retention sweep's walk through an organization's firings.
CREATE INDEX job_firings_org ON job_firings(organization_id, id);
CREATE INDEX job_firings_open ON job_firings(status) WHERE status IN ('pending', 'buffered', 'started');
