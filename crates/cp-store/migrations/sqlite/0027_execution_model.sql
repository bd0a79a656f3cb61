-- The model a run was started with (its agent's or team's), for usage by model. No foreign key:
-- a deleted model's runs keep their history.
ALTER TABLE executions ADD COLUMN model_id BLOB;

-- Usage reports and the overview read an organization's executions by creation time (an
-- execution's id is drawn when a job fires, which may be long before it is stored).
CREATE INDEX executions_org_created ON executions(organization_id, created_at);

-- An agent's or team's runs, newest first (its page, and GET /executions?entity_id=).
CREATE INDEX executions_org_entity ON executions(organization_id, entity_id, id);
