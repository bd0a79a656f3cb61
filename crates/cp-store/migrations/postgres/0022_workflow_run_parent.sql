-- A workflow run started by an agent's workflow_executor tool names the execution that asked
-- for it (`GET /workflow-runs?execution_id=`). Keep in step with ../sqlite/0022_workflow_run_parent.sql.
ALTER TABLE workflow_runs ADD COLUMN parent_execution_id UUID;
CREATE INDEX workflow_runs_parent ON workflow_runs(organization_id, parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;
