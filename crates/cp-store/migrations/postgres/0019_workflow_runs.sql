-- Workflow runs (API §7). A run's step states are one JSON document on its row: the scheduler
-- reads and writes the whole run at once, guarded by `last_seq`, so every advance is one
-- atomic write whatever it touches. Keep in step with ../sqlite/0019_workflow_runs.sql.
CREATE TABLE workflow_runs (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    workflow_id UUID NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    workflow_name TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    inputs JSONB NOT NULL,
    worker_queue_id UUID,
    -- {step_id: StepRun}
    steps JSONB NOT NULL,
    attempt BIGINT NOT NULL,
    error TEXT,
    -- When the scheduler must look again (Unix ms): a retry's backoff, a sleep, a timeout.
    wake_at BIGINT,
    last_seq BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_by_name TEXT NOT NULL,
    created_by_role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX workflow_runs_org ON workflow_runs(organization_id, id);
CREATE INDEX workflow_runs_workflow ON workflow_runs(organization_id, workflow_id, id);
CREATE INDEX workflow_runs_wake ON workflow_runs(wake_at) WHERE wake_at IS NOT NULL;

-- A run's own event stream (`GET /workflow-runs/{id}/stream`).
CREATE TABLE workflow_run_events (
    run_id UUID NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    organization_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- The outbox: a step's execution that ended, written in the same transaction as its end.
-- The scheduler advances the run and deletes the row in the advance's own transaction.
CREATE TABLE workflow_wakeups (
    execution_id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE executions ADD COLUMN workflow_run_id UUID, ADD COLUMN step_id TEXT;
CREATE INDEX executions_workflow_run ON executions(workflow_run_id) WHERE workflow_run_id IS NOT NULL;
