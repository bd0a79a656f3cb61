-- What an execution costs PostgreSQL to write (DESIGN §4, hot paths avoid write amplification).
--
-- Events are only ever stored by a statement that also writes their execution (created in the
-- same statement, or its row updated under the lease), so the foreign key proved nothing and
-- cost a locking lookup of the execution for every event row. Deleting an execution still
-- deletes its events, once per statement.
ALTER TABLE execution_events DROP CONSTRAINT execution_events_execution_id_fkey;

CREATE FUNCTION delete_execution_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM execution_events e USING gone g WHERE e.execution_id = g.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER executions_delete_events AFTER DELETE ON executions
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION delete_execution_events();

-- Room on each page for a row's next version: an update that changes no indexed column (a
-- batch of events, which extends the lease only when a third of it is gone) then stays on
-- the page and writes no index entry (a HOT update).
ALTER TABLE executions SET (fillfactor = 75);
