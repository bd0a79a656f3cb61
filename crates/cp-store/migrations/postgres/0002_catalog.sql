-- Catalog (PostgreSQL): models, skills and their associations, the full agent and team columns,
-- team membership and environment links. Keep in step with ../sqlite/0002_catalog.sql.

CREATE TABLE models (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    value TEXT NOT NULL,
    label TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_model TEXT,
    model_type TEXT NOT NULL DEFAULT 'text-generation',
    description TEXT,
    logo TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    recommended BOOLEAN NOT NULL DEFAULT FALSE,
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    compatible_runtimes JSONB NOT NULL DEFAULT '[]',
    capabilities JSONB NOT NULL DEFAULT '{}',
    pricing JSONB,
    context_window BIGINT,
    base_url TEXT,
    api_key_secret TEXT,
    display_order BIGINT NOT NULL DEFAULT 1000,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT models_org_value_uniq UNIQUE (organization_id, value)
);
CREATE INDEX models_org ON models(organization_id, display_order, value);
CREATE UNIQUE INDEX models_one_default ON models(organization_id) WHERE is_default;

CREATE TABLE skills (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    skill_type TEXT NOT NULL,
    description TEXT,
    icon TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    configuration JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT skills_org_name_uniq UNIQUE (organization_id, name)
);
CREATE INDEX skills_org ON skills(organization_id, id);

-- Agents: the columns the foundation left for the catalog. A model in use cannot be deleted.
ALTER TABLE agents ADD COLUMN system_prompt TEXT;
ALTER TABLE agents ADD COLUMN runtime TEXT NOT NULL DEFAULT 'default';
ALTER TABLE agents ADD COLUMN model_id UUID REFERENCES models(id) ON DELETE RESTRICT;
ALTER TABLE agents ADD COLUMN llm_config JSONB NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN capabilities JSONB NOT NULL DEFAULT '[]';
ALTER TABLE agents ADD COLUMN configuration JSONB NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN execution_environment JSONB NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN runner_name TEXT;
ALTER TABLE agents ADD COLUMN state JSONB NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN error_message TEXT;
ALTER TABLE agents ADD COLUMN last_active_at TIMESTAMPTZ;
CREATE INDEX agents_model ON agents(model_id);

ALTER TABLE teams ADD COLUMN runtime TEXT NOT NULL DEFAULT 'default';
ALTER TABLE teams ADD COLUMN model_id UUID REFERENCES models(id) ON DELETE RESTRICT;
ALTER TABLE teams ADD COLUMN configuration JSONB NOT NULL DEFAULT '{}';
ALTER TABLE teams ADD COLUMN execution_environment JSONB NOT NULL DEFAULT '{}';
ALTER TABLE teams ADD COLUMN state JSONB NOT NULL DEFAULT '{}';
ALTER TABLE teams ADD COLUMN error_message TEXT;
ALTER TABLE teams ADD COLUMN last_active_at TIMESTAMPTZ;
CREATE INDEX teams_model ON teams(model_id);

-- Team membership: what `configuration.member_ids` says, in its order. Rows go with the agent.
CREATE TABLE team_members (
    team_id UUID NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    agent_id UUID NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    added_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (team_id, agent_id)
);
CREATE INDEX team_members_agent ON team_members(agent_id);

CREATE TABLE agent_environments (
    agent_id UUID NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    environment_id UUID NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (agent_id, environment_id)
);
CREATE INDEX agent_environments_env ON agent_environments(environment_id);

CREATE TABLE team_environments (
    team_id UUID NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    environment_id UUID NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (team_id, environment_id)
);
CREATE INDEX team_environments_env ON team_environments(environment_id);

-- A skill attached to exactly one agent, team or environment. One nullable foreign key per
-- kind (rather than a bare entity id) so deleting the entity removes its associations.
CREATE TABLE skill_associations (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    skill_id UUID NOT NULL REFERENCES skills(id) ON DELETE CASCADE,
    agent_id UUID REFERENCES agents(id) ON DELETE CASCADE,
    team_id UUID REFERENCES teams(id) ON DELETE CASCADE,
    environment_id UUID REFERENCES environments(id) ON DELETE CASCADE,
    configuration_override JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT skill_associations_one_entity CHECK (
        num_nonnulls(agent_id, team_id, environment_id) = 1),
    CONSTRAINT skill_associations_agent_uniq UNIQUE (agent_id, skill_id),
    CONSTRAINT skill_associations_team_uniq UNIQUE (team_id, skill_id),
    CONSTRAINT skill_associations_env_uniq UNIQUE (environment_id, skill_id)
);
CREATE INDEX skill_associations_skill ON skill_associations(skill_id);
