-- The key that registered a worker: a worker-role key acts only on its own workers and reads
-- only the secrets of the runs they hold.
ALTER TABLE workers ADD COLUMN key_id BLOB;
