-- Task plans (API §6): a task, each iteration the planner answered (the first, then one per
-- refinement), and the workflow runs it started. Keep in step with ../postgres/0023_task_plans.sql.
CREATE TABLE task_plans (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    priority TEXT,
    project_id BLOB,
    -- The latest iteration.
    iteration INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX task_plans_org ON task_plans(organization_id, id);

CREATE TABLE task_plan_iterations (
    plan_id BLOB NOT NULL REFERENCES task_plans(id) ON DELETE CASCADE,
    iteration INTEGER NOT NULL,
    feedback TEXT,
    plan TEXT NOT NULL,
    planner TEXT NOT NULL,
    model TEXT,
    planner_reason TEXT,
    usage TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (plan_id, iteration)
);

CREATE TABLE task_plan_runs (
    plan_id BLOB NOT NULL REFERENCES task_plans(id) ON DELETE CASCADE,
    workflow_run_id BLOB NOT NULL,
    workflow_id BLOB NOT NULL,
    iteration INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (plan_id, workflow_run_id)
);
