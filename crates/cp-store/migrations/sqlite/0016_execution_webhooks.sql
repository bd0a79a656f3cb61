-- Execution webhooks refer to the event that caused them. The change that emits one writes
-- its deliveries with it, so they hold the execution and the event's `seq` instead of a
-- payload; the sender makes the payload from them once, on the first attempt.
-- Keep in step with ../postgres/0016_execution_webhooks.sql (SQLite cannot drop a NOT NULL,
-- so the table is rebuilt).
CREATE TABLE webhook_deliveries_new (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    webhook_id BLOB NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id BLOB NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until INTEGER,
    claim_token BLOB,
    last_status_code INTEGER,
    last_latency_ms INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    execution_id BLOB,
    event_seq INTEGER,
    CONSTRAINT webhook_deliveries_status CHECK (status IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT webhook_deliveries_payload CHECK (payload IS NOT NULL OR (execution_id IS NOT NULL AND event_seq IS NOT NULL))
);
INSERT INTO webhook_deliveries_new (id, organization_id, webhook_id, event_id, event_type, payload, status, attempts,
    next_attempt_at, claimed_until, claim_token, last_status_code, last_latency_ms, last_error, created_at, updated_at)
SELECT id, organization_id, webhook_id, event_id, event_type, payload, status, attempts, next_attempt_at,
    claimed_until, claim_token, last_status_code, last_latency_ms, last_error, created_at, updated_at
FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
