-- Outbound webhooks (API §8). Keep in step with ../postgres/0010_webhooks.sql.
--
-- The signing secret is sealed with the server's master key (like secret values); during a
-- rotation the previous one keeps signing until `previous_secret_until` (Unix ms).
CREATE TABLE webhooks (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason TEXT,
    secret BLOB NOT NULL,
    previous_secret BLOB,
    previous_secret_until INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhooks_org ON webhooks(organization_id, id);

-- The outbox: one row per (event, endpoint), written in the transaction of the change that
-- caused the event. `event_id` is the message id (the same on every attempt, so receivers
-- can drop duplicates); `claimed_until` (Unix ms) is the sender's lease on a due row, and
-- `claim_token` proves an attempt's result comes from the claim that still holds it.
CREATE TABLE webhook_deliveries (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    webhook_id BLOB NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id BLOB NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
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
    CONSTRAINT webhook_deliveries_status CHECK (status IN ('pending', 'succeeded', 'failed'))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
