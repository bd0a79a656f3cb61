-- Task plans (API §6): a task, each iteration the planner answered (the first, then one per
-- refinement), and the workflow runs it started. Keep in step with ../sqlite/0023_task_plans.sql.
CREATE TABLE task_plans (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    priority TEXT,
    project_id UUID,
    -- The latest iteration.
    iteration BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX task_plans_org ON task_plans(organization_id, id);

CREATE TABLE task_plan_iterations (
    plan_id UUID NOT NULL REFERENCES task_plans(id) ON DELETE CASCADE,
    iteration BIGINT NOT NULL,
    feedback TEXT,
    plan JSONB NOT NULL,
    planner TEXT NOT NULL,
    model TEXT,
    planner_reason TEXT,
    usage JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plan_id, iteration)
);

CREATE TABLE task_plan_runs (
    plan_id UUID NOT NULL REFERENCES task_plans(id) ON DELETE CASCADE,
    workflow_run_id UUID NOT NULL,
    workflow_id UUID NOT NULL,
    iteration BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (plan_id, workflow_run_id)
);
