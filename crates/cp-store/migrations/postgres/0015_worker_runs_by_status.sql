-- A worker keeps its id on the runs it finished, so its poll's look for runs being
-- cancelled seeks (worker, status) instead of walking every run the worker ever had.
CREATE INDEX executions_worker_status ON executions(worker_id, status) WHERE worker_id IS NOT NULL;
DROP INDEX executions_worker;
