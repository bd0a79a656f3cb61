-- The context graph (issue 25): per-organization nodes and relationships, ingested by users
-- (`integration` names the source) or projected from the control plane's own entities
-- (`integration = 'control_plane'`, node id = the entity's id). Keep in step with
-- ../sqlite/0025_context_graph.sql.
CREATE TABLE graph_nodes (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    integration TEXT NOT NULL,
    external_id TEXT NOT NULL,
    -- A JSON array of labels; `graph_node_labels` holds the same, one row each, for lookups.
    labels JSONB NOT NULL DEFAULT '[]',
    properties JSONB NOT NULL DEFAULT '{}',
    -- `properties.name` when it is a string: the property most queries start from.
    name TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT graph_nodes_source_uniq UNIQUE (organization_id, integration, external_id)
);
CREATE INDEX graph_nodes_name ON graph_nodes(organization_id, name);

CREATE TABLE graph_node_labels (
    node_id UUID NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (node_id, label)
);
CREATE INDEX graph_node_labels_label ON graph_node_labels(organization_id, label, node_id);

CREATE TABLE graph_relationships (
    id UUID PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    from_id UUID NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
    to_id UUID NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
    integration TEXT NOT NULL,
    properties JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT graph_relationships_uniq UNIQUE (from_id, type, to_id)
);
CREATE INDEX graph_relationships_to ON graph_relationships(to_id, type);
CREATE INDEX graph_relationships_org_type ON graph_relationships(organization_id, type);

-- The control plane's own entities, projected by triggers so that no write path (API, worker,
-- cascade, another replica) can leave the graph behind: one node per entity (its id is the
-- entity's; `external_id` the id as text) and one relationship per link. Generated from one
-- table of entities and links; keep both backends' files in step.

CREATE FUNCTION graph_project_projects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Project"]', jsonb_build_object('name', NEW.name, 'key', NEW.key, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Project')
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER projects_graph AFTER INSERT OR DELETE OR UPDATE OF name, key, description, status ON projects
    FOR EACH ROW EXECUTE FUNCTION graph_project_projects();

CREATE FUNCTION graph_project_environments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Environment"]', jsonb_build_object('name', NEW.name, 'display_name', NEW.display_name, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Environment')
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER environments_graph AFTER INSERT OR DELETE OR UPDATE OF name, display_name, description, status ON environments
    FOR EACH ROW EXECUTE FUNCTION graph_project_environments();

CREATE FUNCTION graph_project_models() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Model"]', jsonb_build_object('name', NEW.value, 'label', NEW.label, 'provider', NEW.provider, 'model_type', NEW.model_type, 'enabled', NEW.enabled), NEW.value, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Model')
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER models_graph AFTER INSERT OR DELETE OR UPDATE OF value, label, provider, model_type, enabled ON models
    FOR EACH ROW EXECUTE FUNCTION graph_project_models();

CREATE FUNCTION graph_project_skills() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Skill"]', jsonb_build_object('name', NEW.name, 'skill_type', NEW.skill_type, 'description', NEW.description, 'enabled', NEW.enabled), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Skill')
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER skills_graph AFTER INSERT OR DELETE OR UPDATE OF name, skill_type, description, enabled ON skills
    FOR EACH ROW EXECUTE FUNCTION graph_project_skills();

CREATE FUNCTION graph_project_agents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Agent"]', jsonb_build_object('name', NEW.name, 'description', NEW.description, 'status', NEW.status, 'runtime', NEW.runtime), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Agent')
        ON CONFLICT DO NOTHING;
    IF TG_OP = 'INSERT' OR NEW.model_id IS DISTINCT FROM OLD.model_id THEN
        DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'USES_MODEL' AND integration = 'control_plane';
        INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
            SELECT gen_random_uuid(), NEW.organization_id, 'USES_MODEL', NEW.id, NEW.model_id, 'control_plane', '{}'::jsonb, NEW.updated_at, NEW.updated_at
            WHERE NEW.model_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
              AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.model_id AND organization_id = NEW.organization_id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER agents_graph AFTER INSERT OR DELETE OR UPDATE OF name, description, status, runtime, model_id ON agents
    FOR EACH ROW EXECUTE FUNCTION graph_project_agents();

CREATE FUNCTION graph_project_teams() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Team"]', jsonb_build_object('name', NEW.name, 'description', NEW.description, 'status', NEW.status, 'runtime', NEW.runtime), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Team')
        ON CONFLICT DO NOTHING;
    IF TG_OP = 'INSERT' OR NEW.model_id IS DISTINCT FROM OLD.model_id THEN
        DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'USES_MODEL' AND integration = 'control_plane';
        INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
            SELECT gen_random_uuid(), NEW.organization_id, 'USES_MODEL', NEW.id, NEW.model_id, 'control_plane', '{}'::jsonb, NEW.updated_at, NEW.updated_at
            WHERE NEW.model_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
              AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.model_id AND organization_id = NEW.organization_id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER teams_graph AFTER INSERT OR DELETE OR UPDATE OF name, description, status, runtime, model_id ON teams
    FOR EACH ROW EXECUTE FUNCTION graph_project_teams();

CREATE FUNCTION graph_project_worker_queues() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["WorkerQueue"]', jsonb_build_object('name', NEW.name, 'display_name', NEW.display_name, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'WorkerQueue')
        ON CONFLICT DO NOTHING;
    IF TG_OP = 'INSERT' OR NEW.environment_id IS DISTINCT FROM OLD.environment_id THEN
        DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'BELONGS_TO' AND integration = 'control_plane';
        INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
            SELECT gen_random_uuid(), NEW.organization_id, 'BELONGS_TO', NEW.id, NEW.environment_id, 'control_plane', '{}'::jsonb, NEW.updated_at, NEW.updated_at
            WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
              AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER worker_queues_graph AFTER INSERT OR DELETE OR UPDATE OF name, display_name, description, status, environment_id ON worker_queues
    FOR EACH ROW EXECUTE FUNCTION graph_project_worker_queues();

CREATE FUNCTION graph_project_integrations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Integration"]', jsonb_build_object('name', NEW.name, 'integration_type', NEW.integration_type, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Integration')
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER integrations_graph AFTER INSERT OR DELETE OR UPDATE OF name, integration_type, description, status ON integrations
    FOR EACH ROW EXECUTE FUNCTION graph_project_integrations();

CREATE FUNCTION graph_project_workflows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
        DELETE FROM graph_node_labels WHERE node_id = OLD.id;
        DELETE FROM graph_nodes WHERE id = OLD.id;
        RETURN NULL;
    END IF;
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', NEW.id::text, '["Workflow"]', jsonb_build_object('name', NEW.name, 'description', NEW.description, 'version', NEW.version), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Workflow')
        ON CONFLICT DO NOTHING;
    IF TG_OP = 'INSERT' OR NEW.project_id IS DISTINCT FROM OLD.project_id THEN
        DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'BELONGS_TO' AND integration = 'control_plane';
        INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
            SELECT gen_random_uuid(), NEW.organization_id, 'BELONGS_TO', NEW.id, NEW.project_id, 'control_plane', '{}'::jsonb, NEW.updated_at, NEW.updated_at
            WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
              AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id)
            ON CONFLICT DO NOTHING;
    END IF;
    DELETE FROM graph_relationships WHERE from_id = NEW.id AND type IN ('USES_AGENT', 'USES_TEAM')
        AND integration = 'control_plane';
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'USES_AGENT', NEW.id, n.id, 'control_plane', '{}'::jsonb, NEW.updated_at, NEW.updated_at
        FROM jsonb_array_elements(NEW.definition->'steps') s JOIN graph_nodes n ON n.id = (s->>'agent_id')::uuid AND n.organization_id = NEW.organization_id
        WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id)
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'USES_TEAM', NEW.id, n.id, 'control_plane', '{}'::jsonb, NEW.updated_at, NEW.updated_at
        FROM jsonb_array_elements(NEW.definition->'steps') s JOIN graph_nodes n ON n.id = (s->>'team_id')::uuid AND n.organization_id = NEW.organization_id
        WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER workflows_graph AFTER INSERT OR DELETE OR UPDATE OF name, description, version, project_id, definition ON workflows
    FOR EACH ROW EXECUTE FUNCTION graph_project_workflows();

CREATE FUNCTION graph_project_team_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.agent_id AND type = 'MEMBER_OF' AND to_id = OLD.team_id
            AND integration = 'control_plane';
        RETURN NULL;
    END IF;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'MEMBER_OF', NEW.agent_id, NEW.team_id, 'control_plane', '{}'::jsonb, NEW.added_at, NEW.added_at
        WHERE NEW.team_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.agent_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.team_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER team_members_graph AFTER INSERT OR DELETE ON team_members
    FOR EACH ROW EXECUTE FUNCTION graph_project_team_members();

CREATE FUNCTION graph_project_agent_environments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.agent_id AND type = 'RUNS_IN' AND to_id = OLD.environment_id
            AND integration = 'control_plane';
        RETURN NULL;
    END IF;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'RUNS_IN', NEW.agent_id, NEW.environment_id, 'control_plane', '{}'::jsonb, now(), now()
        WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.agent_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER agent_environments_graph AFTER INSERT OR DELETE ON agent_environments
    FOR EACH ROW EXECUTE FUNCTION graph_project_agent_environments();

CREATE FUNCTION graph_project_team_environments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.team_id AND type = 'RUNS_IN' AND to_id = OLD.environment_id
            AND integration = 'control_plane';
        RETURN NULL;
    END IF;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'RUNS_IN', NEW.team_id, NEW.environment_id, 'control_plane', '{}'::jsonb, now(), now()
        WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.team_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER team_environments_graph AFTER INSERT OR DELETE ON team_environments
    FOR EACH ROW EXECUTE FUNCTION graph_project_team_environments();

CREATE FUNCTION graph_project_skill_associations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = COALESCE(OLD.agent_id, OLD.team_id, OLD.environment_id) AND type = 'USES_SKILL' AND to_id = OLD.skill_id
            AND integration = 'control_plane';
        RETURN NULL;
    END IF;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'USES_SKILL', COALESCE(NEW.agent_id, NEW.team_id, NEW.environment_id), NEW.skill_id, 'control_plane', '{}'::jsonb, NEW.created_at, NEW.created_at
        WHERE NEW.skill_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = COALESCE(NEW.agent_id, NEW.team_id, NEW.environment_id) AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.skill_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER skill_associations_graph AFTER INSERT OR DELETE ON skill_associations
    FOR EACH ROW EXECUTE FUNCTION graph_project_skill_associations();

CREATE FUNCTION graph_project_project_agents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.agent_id AND type = 'BELONGS_TO' AND to_id = OLD.project_id
            AND integration = 'control_plane';
        RETURN NULL;
    END IF;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'BELONGS_TO', NEW.agent_id, NEW.project_id, 'control_plane', '{}'::jsonb, NEW.added_at, NEW.added_at
        WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.agent_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER project_agents_graph AFTER INSERT OR DELETE ON project_agents
    FOR EACH ROW EXECUTE FUNCTION graph_project_project_agents();

CREATE FUNCTION graph_project_project_teams() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM graph_relationships WHERE from_id = OLD.team_id AND type = 'BELONGS_TO' AND to_id = OLD.project_id
            AND integration = 'control_plane';
        RETURN NULL;
    END IF;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT gen_random_uuid(), NEW.organization_id, 'BELONGS_TO', NEW.team_id, NEW.project_id, 'control_plane', '{}'::jsonb, NEW.added_at, NEW.added_at
        WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.team_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;
CREATE TRIGGER project_teams_graph AFTER INSERT OR DELETE ON project_teams
    FOR EACH ROW EXECUTE FUNCTION graph_project_project_teams();

-- What existed before this migration.
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Project"]', jsonb_build_object('name', e.name, 'key', e.key, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM projects e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Project' FROM projects;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Environment"]', jsonb_build_object('name', e.name, 'display_name', e.display_name, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM environments e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Environment' FROM environments;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Model"]', jsonb_build_object('name', e.value, 'label', e.label, 'provider', e.provider, 'model_type', e.model_type, 'enabled', e.enabled), e.value, e.created_at, e.updated_at FROM models e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Model' FROM models;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Skill"]', jsonb_build_object('name', e.name, 'skill_type', e.skill_type, 'description', e.description, 'enabled', e.enabled), e.name, e.created_at, e.updated_at FROM skills e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Skill' FROM skills;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Agent"]', jsonb_build_object('name', e.name, 'description', e.description, 'status', e.status, 'runtime', e.runtime), e.name, e.created_at, e.updated_at FROM agents e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Agent' FROM agents;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Team"]', jsonb_build_object('name', e.name, 'description', e.description, 'status', e.status, 'runtime', e.runtime), e.name, e.created_at, e.updated_at FROM teams e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Team' FROM teams;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["WorkerQueue"]', jsonb_build_object('name', e.name, 'display_name', e.display_name, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM worker_queues e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'WorkerQueue' FROM worker_queues;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Integration"]', jsonb_build_object('name', e.name, 'integration_type', e.integration_type, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM integrations e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Integration' FROM integrations;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', e.id::text, '["Workflow"]', jsonb_build_object('name', e.name, 'description', e.description, 'version', e.version), e.name, e.created_at, e.updated_at FROM workflows e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Workflow' FROM workflows;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'USES_MODEL', e.id, e.model_id, 'control_plane', '{}'::jsonb, e.updated_at, e.updated_at
    FROM agents e WHERE e.model_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.model_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'USES_MODEL', e.id, e.model_id, 'control_plane', '{}'::jsonb, e.updated_at, e.updated_at
    FROM teams e WHERE e.model_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.model_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'BELONGS_TO', e.id, e.environment_id, 'control_plane', '{}'::jsonb, e.updated_at, e.updated_at
    FROM worker_queues e WHERE e.environment_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.environment_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'BELONGS_TO', e.id, e.project_id, 'control_plane', '{}'::jsonb, e.updated_at, e.updated_at
    FROM workflows e WHERE e.project_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.project_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), organization_id, 'USES_AGENT', wid, nid, 'control_plane', '{}'::jsonb, at, at FROM (
        SELECT DISTINCT e.organization_id, e.id AS wid, n.id AS nid, e.updated_at AS at FROM workflows e, jsonb_array_elements(e.definition->'steps') s
        JOIN graph_nodes n ON n.id = (s->>'agent_id')::uuid WHERE n.organization_id = e.organization_id) w;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), organization_id, 'USES_TEAM', wid, nid, 'control_plane', '{}'::jsonb, at, at FROM (
        SELECT DISTINCT e.organization_id, e.id AS wid, n.id AS nid, e.updated_at AS at FROM workflows e, jsonb_array_elements(e.definition->'steps') s
        JOIN graph_nodes n ON n.id = (s->>'team_id')::uuid WHERE n.organization_id = e.organization_id) w;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'MEMBER_OF', e.agent_id, e.team_id, 'control_plane', '{}'::jsonb, e.added_at, e.added_at
    FROM team_members e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.agent_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.team_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'RUNS_IN', e.agent_id, e.environment_id, 'control_plane', '{}'::jsonb, now(), now()
    FROM agent_environments e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.agent_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.environment_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'RUNS_IN', e.team_id, e.environment_id, 'control_plane', '{}'::jsonb, now(), now()
    FROM team_environments e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.team_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.environment_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'USES_SKILL', COALESCE(e.agent_id, e.team_id, e.environment_id), e.skill_id, 'control_plane', '{}'::jsonb, e.created_at, e.created_at
    FROM skill_associations e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = COALESCE(e.agent_id, e.team_id, e.environment_id) AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.skill_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'BELONGS_TO', e.agent_id, e.project_id, 'control_plane', '{}'::jsonb, e.added_at, e.added_at
    FROM project_agents e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.agent_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.project_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT gen_random_uuid(), e.organization_id, 'BELONGS_TO', e.team_id, e.project_id, 'control_plane', '{}'::jsonb, e.added_at, e.added_at
    FROM project_teams e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.team_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.project_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
