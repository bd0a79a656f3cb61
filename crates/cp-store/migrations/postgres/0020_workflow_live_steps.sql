-- Step executions still to end, by run: the scheduler's sweep cancels those whose run has
-- ended (a cancel after a run's advance that a crash cut off). Keep in step with
-- ../sqlite/0020_workflow_live_steps.sql.
CREATE INDEX executions_workflow_live ON executions(workflow_run_id)
    WHERE workflow_run_id IS NOT NULL AND status IN ('queued', 'running', 'paused');
