-- The execution engine: worker queues, the workers registered on them, executions and their
-- events. Deadlines the reaper compares (`alive_until`, `lease_until`, `cancel_deadline`) are
-- Unix milliseconds: one integer comparison on both backends, indexable.

CREATE TABLE worker_queues (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    environment_id BLOB NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    max_workers INTEGER,
    heartbeat_interval INTEGER NOT NULL DEFAULT 30,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    tags TEXT NOT NULL DEFAULT '[]',
    settings TEXT NOT NULL DEFAULT '{}',
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT worker_queues_env_name_uniq UNIQUE (environment_id, name)
);
CREATE INDEX worker_queues_org ON worker_queues(organization_id, id);
CREATE INDEX worker_queues_env ON worker_queues(environment_id, id);

CREATE TABLE workers (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    worker_queue_id BLOB NOT NULL REFERENCES worker_queues(id) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    runner_name TEXT NOT NULL,
    version TEXT,
    capabilities TEXT NOT NULL DEFAULT '{}',
    system_info TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    current_executions TEXT NOT NULL DEFAULT '[]',
    tasks_processed INTEGER NOT NULL DEFAULT 0,
    drain BOOLEAN NOT NULL DEFAULT FALSE,
    registered_at TEXT NOT NULL,
    last_heartbeat_at TEXT NOT NULL,
    alive_until INTEGER NOT NULL
);
CREATE INDEX workers_org ON workers(organization_id, id);
CREATE INDEX workers_queue ON workers(worker_queue_id, alive_until);
CREATE INDEX workers_alive ON workers(alive_until) WHERE status NOT IN ('offline', 'disconnected');

CREATE TABLE executions (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    execution_type TEXT NOT NULL,
    entity_id BLOB NOT NULL,
    entity_name TEXT,
    worker_queue_id BLOB REFERENCES worker_queues(id) ON DELETE SET NULL,
    prompt TEXT NOT NULL,
    system_prompt TEXT,
    status TEXT NOT NULL,
    response TEXT,
    error_message TEXT,
    usage TEXT NOT NULL DEFAULT '{}',
    execution_metadata TEXT NOT NULL DEFAULT '{}',
    user_metadata TEXT NOT NULL DEFAULT '{}',
    execution_environment TEXT NOT NULL DEFAULT '{}',
    attempt INTEGER NOT NULL DEFAULT 1,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    worker_id BLOB,
    lease_id BLOB,
    lease_until INTEGER,
    cancel_deadline INTEGER,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_by TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    completed_at TEXT,
    updated_at TEXT NOT NULL
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
    execution_id BLOB NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    organization_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
);
