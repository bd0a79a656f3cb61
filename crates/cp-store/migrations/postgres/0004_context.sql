-- Context (PostgreSQL): the knowledge, resources, policies and variables attached to an organization,
-- project, environment, team or agent. Keep in step with ../sqlite/0004_context.sql.
--
-- One nullable foreign key per entity kind (like skill_associations) so deleting the entity
-- deletes its context; the organization's own row sets none of them and goes with the org.
CREATE TABLE contexts (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    entity_type TEXT NOT NULL,
    project_id UUID REFERENCES projects(id) ON DELETE CASCADE,
    environment_id UUID REFERENCES environments(id) ON DELETE CASCADE,
    team_id UUID REFERENCES teams(id) ON DELETE CASCADE,
    agent_id UUID REFERENCES agents(id) ON DELETE CASCADE,
    knowledge_uuids JSONB NOT NULL DEFAULT '[]',
    resource_ids JSONB NOT NULL DEFAULT '[]',
    policy_ids JSONB NOT NULL DEFAULT '[]',
    variables JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT contexts_entity_type CHECK (
        entity_type IN ('organization', 'project', 'environment', 'team', 'agent')),
    -- The column of the row's kind is set and every other one is empty (none for the organization).
    CONSTRAINT contexts_project_set CHECK ((project_id IS NOT NULL) = (entity_type = 'project')),
    CONSTRAINT contexts_environment_set CHECK ((environment_id IS NOT NULL) = (entity_type = 'environment')),
    CONSTRAINT contexts_team_set CHECK ((team_id IS NOT NULL) = (entity_type = 'team')),
    CONSTRAINT contexts_agent_set CHECK ((agent_id IS NOT NULL) = (entity_type = 'agent')),
    CONSTRAINT contexts_project_uniq UNIQUE (project_id),
    CONSTRAINT contexts_environment_uniq UNIQUE (environment_id),
    CONSTRAINT contexts_team_uniq UNIQUE (team_id),
    CONSTRAINT contexts_agent_uniq UNIQUE (agent_id)
);
CREATE UNIQUE INDEX contexts_org_level ON contexts(organization_id) WHERE entity_type = 'organization';
