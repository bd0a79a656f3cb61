-- The model a run was started with (its agent's or team's), for usage by model. No foreign key:
-- a deleted model's runs keep their history.
ALTER TABLE executions ADD COLUMN model_id BLOB;
