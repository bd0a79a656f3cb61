-- A per-organization counter that moves whenever anything an agent or team list embeds
-- changes, so the server can serve a cached list body after one primary-key read. Triggers
-- keep it, so no write path can forget to bump it. No foreign key: an organization's delete
-- cascades through these tables and their triggers must not fail on the vanished parent.
CREATE TABLE catalog_versions (
    organization_id TEXT PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
);

-- Deferred to commit: the counter row is locked only at the very end of a transaction, after
-- every other row lock it takes, so two writers of one organization cannot deadlock on it.
CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO catalog_versions (organization_id, version)
        VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.organization_id ELSE NEW.organization_id END, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = catalog_versions.version + 1;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER agents_catalog_version AFTER INSERT OR UPDATE OR DELETE ON agents
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER teams_catalog_version AFTER INSERT OR UPDATE OR DELETE ON teams
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER models_catalog_version AFTER INSERT OR UPDATE OR DELETE ON models
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER skills_catalog_version AFTER INSERT OR UPDATE OR DELETE ON skills
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER environments_catalog_version AFTER INSERT OR UPDATE OR DELETE ON environments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER projects_catalog_version AFTER INSERT OR UPDATE OR DELETE ON projects
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER team_members_catalog_version AFTER INSERT OR UPDATE OR DELETE ON team_members
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER agent_environments_catalog_version AFTER INSERT OR UPDATE OR DELETE ON agent_environments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER team_environments_catalog_version AFTER INSERT OR UPDATE OR DELETE ON team_environments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER skill_associations_catalog_version AFTER INSERT OR UPDATE OR DELETE ON skill_associations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER project_agents_catalog_version AFTER INSERT OR UPDATE OR DELETE ON project_agents
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER project_teams_catalog_version AFTER INSERT OR UPDATE OR DELETE ON project_teams
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
