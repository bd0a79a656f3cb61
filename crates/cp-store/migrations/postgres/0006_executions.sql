-- The execution engine: worker queues, the workers registered on them, executions and their
-- events. Deadlines the reaper compares (`alive_until`, `lease_until`, `cancel_deadline`) are
-- Unix milliseconds: one integer comparison on both backends, indexable.

CREATE TABLE worker_queues (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    environment_id UUID NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    max_workers BIGINT,
    heartbeat_interval BIGINT NOT NULL DEFAULT 30,
    max_attempts BIGINT NOT NULL DEFAULT 3,
    tags JSONB NOT NULL DEFAULT '[]',
    settings JSONB NOT NULL DEFAULT '{}',
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT worker_queues_env_name_uniq UNIQUE (environment_id, name)
);
CREATE INDEX worker_queues_org ON worker_queues(organization_id, id);
CREATE INDEX worker_queues_env ON worker_queues(environment_id, id);

CREATE TABLE workers (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    worker_queue_id UUID NOT NULL REFERENCES worker_queues(id) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    runner_name TEXT NOT NULL,
    version TEXT,
    capabilities JSONB NOT NULL DEFAULT '{}',
    system_info JSONB NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    current_executions JSONB NOT NULL DEFAULT '[]',
    tasks_processed BIGINT NOT NULL DEFAULT 0,
    drain BOOLEAN NOT NULL DEFAULT FALSE,
    registered_at TIMESTAMPTZ NOT NULL,
    last_heartbeat_at TIMESTAMPTZ NOT NULL,
    alive_until BIGINT NOT NULL
);
CREATE INDEX workers_org ON workers(organization_id, id);
CREATE INDEX workers_queue ON workers(worker_queue_id, alive_until);
CREATE INDEX workers_alive ON workers(alive_until) WHERE status NOT IN ('offline', 'disconnected');

CREATE TABLE executions (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    execution_type TEXT NOT NULL,
    entity_id UUID NOT NULL,
    entity_name TEXT,
    worker_queue_id UUID REFERENCES worker_queues(id) ON DELETE SET NULL,
    prompt TEXT NOT NULL,
    system_prompt TEXT,
    status TEXT NOT NULL,
    response TEXT,
    error_message TEXT,
    usage JSONB NOT NULL DEFAULT '{}',
    execution_metadata JSONB NOT NULL DEFAULT '{}',
    user_metadata JSONB NOT NULL DEFAULT '{}',
    execution_environment JSONB NOT NULL DEFAULT '{}',
    attempt BIGINT NOT NULL DEFAULT 1,
    max_attempts BIGINT NOT NULL DEFAULT 3,
    worker_id UUID,
    lease_id UUID,
    lease_until BIGINT,
    cancel_deadline BIGINT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX executions_org ON executions(organization_id, id);
CREATE INDEX executions_claim ON executions(worker_queue_id, id) WHERE status = 'queued';
CREATE INDEX executions_queue ON executions(worker_queue_id, status);
CREATE INDEX executions_leases ON executions(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX executions_cancels ON executions(cancel_deadline) WHERE cancel_deadline IS NOT NULL;
CREATE INDEX executions_worker ON executions(worker_id) WHERE worker_id IS NOT NULL;

-- Events per execution, numbered 1, 2, 3… without gaps: the number comes from
-- `executions.last_seq`, bumped in the transaction that stores the event.
CREATE TABLE execution_events (
    execution_id UUID NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    organization_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
