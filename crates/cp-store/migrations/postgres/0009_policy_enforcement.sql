-- Policy associations and the decision log (API §4). Keep in step with
-- ../sqlite/0009_policy_enforcement.sql.
--
-- An association attaches a policy to the organization, a project, an environment, a team or
-- an agent. Like contexts, one nullable foreign key per entity kind makes deleting the entity
-- delete its associations; `entity_id` keeps the wire form (the org slug or the UUID).
CREATE TABLE policy_associations (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    policy_id UUID NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    project_id UUID REFERENCES projects(id) ON DELETE CASCADE,
    environment_id UUID REFERENCES environments(id) ON DELETE CASCADE,
    team_id UUID REFERENCES teams(id) ON DELETE CASCADE,
    agent_id UUID REFERENCES agents(id) ON DELETE CASCADE,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    priority BIGINT NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT policy_associations_entity_type CHECK (
        entity_type IN ('organization', 'project', 'environment', 'team', 'agent')),
    CONSTRAINT policy_associations_project_set CHECK ((project_id IS NOT NULL) = (entity_type = 'project')),
    CONSTRAINT policy_associations_environment_set CHECK ((environment_id IS NOT NULL) = (entity_type = 'environment')),
    CONSTRAINT policy_associations_team_set CHECK ((team_id IS NOT NULL) = (entity_type = 'team')),
    CONSTRAINT policy_associations_agent_set CHECK ((agent_id IS NOT NULL) = (entity_type = 'agent')),
    CONSTRAINT policy_associations_uniq UNIQUE (policy_id, entity_type, entity_id)
);
CREATE INDEX policy_associations_org_entity ON policy_associations(organization_id, entity_type, entity_id);
CREATE INDEX policy_associations_org ON policy_associations(organization_id, id);

-- Every enforcement decision. `allowed` is what the policies said; `enforced` is whether the
-- action was stopped (a denial in monitoring mode is allowed but recorded).
CREATE TABLE policy_decisions (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    execution_id UUID,
    tool_name TEXT,
    key_id UUID,
    allowed BOOLEAN NOT NULL,
    blocked BOOLEAN NOT NULL,
    mode TEXT NOT NULL,
    violations JSONB NOT NULL,
    policy_ids JSONB NOT NULL,
    error TEXT,
    input_digest TEXT NOT NULL,
    latency_us BIGINT NOT NULL
);
CREATE INDEX policy_decisions_org ON policy_decisions(organization_id, id);
CREATE INDEX policy_decisions_org_entity ON policy_decisions(organization_id, entity_id, id);

-- The policies that apply to an entity depend on policies, associations and contexts besides
-- the catalog's links: they move the catalog version too, so a resolved policy set can be
-- cached under it (see 0005).
CREATE CONSTRAINT TRIGGER policies_catalog_version AFTER INSERT OR UPDATE OR DELETE ON policies
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER policy_associations_catalog_version AFTER INSERT OR UPDATE OR DELETE ON policy_associations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
CREATE CONSTRAINT TRIGGER contexts_catalog_version AFTER INSERT OR UPDATE OR DELETE ON contexts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();
