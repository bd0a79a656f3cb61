-- Execution webhooks refer to the event that caused them. The change that emits one writes
-- its deliveries in the same statement, so they hold the execution and the event's `seq`
-- instead of a payload; the sender makes the payload from them once, on the first attempt.
-- Keep in step with ../sqlite/0016_execution_webhooks.sql.
ALTER TABLE webhook_deliveries
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN execution_id UUID,
    ADD COLUMN event_seq BIGINT,
    ADD CONSTRAINT webhook_deliveries_payload CHECK (payload IS NOT NULL OR (execution_id IS NOT NULL AND event_seq IS NOT NULL));

-- A time-ordered (version 7) UUID, as the server makes them, for rows written by SQL alone.
CREATE FUNCTION kcp_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
        substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
