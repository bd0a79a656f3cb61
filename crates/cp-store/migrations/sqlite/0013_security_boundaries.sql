-- Access logs name the run a value was handed to and the key that started that run.
ALTER TABLE secret_access_log ADD COLUMN execution_id BLOB;
ALTER TABLE secret_access_log ADD COLUMN started_by BLOB;
ALTER TABLE integration_access_log ADD COLUMN execution_id BLOB;
ALTER TABLE integration_access_log ADD COLUMN started_by BLOB;
-- A worker key made for one queue registers only there.
ALTER TABLE api_keys ADD COLUMN worker_queue_id BLOB;
-- A stored answer that carries a secret is kept encrypted with the master key.
ALTER TABLE idempotency_keys ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
