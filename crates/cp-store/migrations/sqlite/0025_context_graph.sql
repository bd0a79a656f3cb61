-- The context graph (issue 25): per-organization nodes and relationships, ingested by users
-- (`integration` names the source) or projected from the control plane's own entities
-- (`integration = 'control_plane'`, node id = the entity's id). Keep in step with
-- ../postgres/0025_context_graph.sql.
CREATE TABLE graph_nodes (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    integration TEXT NOT NULL,
    external_id TEXT NOT NULL,
    -- A JSON array of labels; `graph_node_labels` holds the same, one row each, for lookups.
    labels TEXT NOT NULL DEFAULT '[]',
    properties TEXT NOT NULL DEFAULT '{}',
    -- `properties.name` when it is a string: the property most queries start from.
    name TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT graph_nodes_source_uniq UNIQUE (organization_id, integration, external_id)
);
CREATE INDEX graph_nodes_name ON graph_nodes(organization_id, name);

CREATE TABLE graph_node_labels (
    node_id BLOB NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    label TEXT NOT NULL,
    PRIMARY KEY (node_id, label)
);
CREATE INDEX graph_node_labels_label ON graph_node_labels(organization_id, label, node_id);

CREATE TABLE graph_relationships (
    id BLOB PRIMARY KEY NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    from_id BLOB NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
    to_id BLOB NOT NULL REFERENCES graph_nodes(id) ON DELETE CASCADE,
    integration TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CONSTRAINT graph_relationships_uniq UNIQUE (from_id, type, to_id)
);
CREATE INDEX graph_relationships_to ON graph_relationships(to_id, type);
CREATE INDEX graph_relationships_org_type ON graph_relationships(organization_id, type);

-- The control plane's own entities, projected by triggers so that no write path (API, worker,
-- cascade, another replica) can leave the graph behind: one node per entity (its id is the
-- entity's; `external_id` the id as text) and one relationship per link. Generated from one
-- table of entities and links; keep both backends' files in step.

CREATE TRIGGER projects_graph_insert AFTER INSERT ON projects BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Project"]', json_object('name', NEW.name, 'key', NEW.key, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Project')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER projects_graph_update AFTER UPDATE OF name, key, description, status ON projects BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Project"]', json_object('name', NEW.name, 'key', NEW.key, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Project')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER projects_graph_delete AFTER DELETE ON projects BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER environments_graph_insert AFTER INSERT ON environments BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Environment"]', json_object('name', NEW.name, 'display_name', NEW.display_name, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Environment')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER environments_graph_update AFTER UPDATE OF name, display_name, description, status ON environments BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Environment"]', json_object('name', NEW.name, 'display_name', NEW.display_name, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Environment')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER environments_graph_delete AFTER DELETE ON environments BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER models_graph_insert AFTER INSERT ON models BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Model"]', json_object('name', NEW.value, 'label', NEW.label, 'provider', NEW.provider, 'model_type', NEW.model_type, 'enabled', CASE WHEN NEW.enabled THEN json('true') ELSE json('false') END), NEW.value, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Model')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER models_graph_update AFTER UPDATE OF value, label, provider, model_type, enabled ON models BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Model"]', json_object('name', NEW.value, 'label', NEW.label, 'provider', NEW.provider, 'model_type', NEW.model_type, 'enabled', CASE WHEN NEW.enabled THEN json('true') ELSE json('false') END), NEW.value, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Model')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER models_graph_delete AFTER DELETE ON models BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER skills_graph_insert AFTER INSERT ON skills BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Skill"]', json_object('name', NEW.name, 'skill_type', NEW.skill_type, 'description', NEW.description, 'enabled', CASE WHEN NEW.enabled THEN json('true') ELSE json('false') END), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Skill')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER skills_graph_update AFTER UPDATE OF name, skill_type, description, enabled ON skills BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Skill"]', json_object('name', NEW.name, 'skill_type', NEW.skill_type, 'description', NEW.description, 'enabled', CASE WHEN NEW.enabled THEN json('true') ELSE json('false') END), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Skill')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER skills_graph_delete AFTER DELETE ON skills BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER agents_graph_insert AFTER INSERT ON agents BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Agent"]', json_object('name', NEW.name, 'description', NEW.description, 'status', NEW.status, 'runtime', NEW.runtime), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Agent')
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_MODEL', NEW.id, NEW.model_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.model_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.model_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER agents_graph_update AFTER UPDATE OF name, description, status, runtime, model_id ON agents BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Agent"]', json_object('name', NEW.name, 'description', NEW.description, 'status', NEW.status, 'runtime', NEW.runtime), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Agent')
        ON CONFLICT DO NOTHING;
    DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'USES_MODEL' AND integration = 'control_plane'
        AND NEW.model_id IS NOT OLD.model_id;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_MODEL', NEW.id, NEW.model_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.model_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.model_id AND organization_id = NEW.organization_id) AND NEW.model_id IS NOT OLD.model_id
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER agents_graph_delete AFTER DELETE ON agents BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER teams_graph_insert AFTER INSERT ON teams BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Team"]', json_object('name', NEW.name, 'description', NEW.description, 'status', NEW.status, 'runtime', NEW.runtime), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Team')
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_MODEL', NEW.id, NEW.model_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.model_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.model_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER teams_graph_update AFTER UPDATE OF name, description, status, runtime, model_id ON teams BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Team"]', json_object('name', NEW.name, 'description', NEW.description, 'status', NEW.status, 'runtime', NEW.runtime), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Team')
        ON CONFLICT DO NOTHING;
    DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'USES_MODEL' AND integration = 'control_plane'
        AND NEW.model_id IS NOT OLD.model_id;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_MODEL', NEW.id, NEW.model_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.model_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.model_id AND organization_id = NEW.organization_id) AND NEW.model_id IS NOT OLD.model_id
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER teams_graph_delete AFTER DELETE ON teams BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER worker_queues_graph_insert AFTER INSERT ON worker_queues BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["WorkerQueue"]', json_object('name', NEW.name, 'display_name', NEW.display_name, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'WorkerQueue')
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'BELONGS_TO', NEW.id, NEW.environment_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER worker_queues_graph_update AFTER UPDATE OF name, display_name, description, status, environment_id ON worker_queues BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["WorkerQueue"]', json_object('name', NEW.name, 'display_name', NEW.display_name, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'WorkerQueue')
        ON CONFLICT DO NOTHING;
    DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'BELONGS_TO' AND integration = 'control_plane'
        AND NEW.environment_id IS NOT OLD.environment_id;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'BELONGS_TO', NEW.id, NEW.environment_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id) AND NEW.environment_id IS NOT OLD.environment_id
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER worker_queues_graph_delete AFTER DELETE ON worker_queues BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER integrations_graph_insert AFTER INSERT ON integrations BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Integration"]', json_object('name', NEW.name, 'integration_type', NEW.integration_type, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Integration')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER integrations_graph_update AFTER UPDATE OF name, integration_type, description, status ON integrations BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Integration"]', json_object('name', NEW.name, 'integration_type', NEW.integration_type, 'description', NEW.description, 'status', NEW.status), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Integration')
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER integrations_graph_delete AFTER DELETE ON integrations BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER workflows_graph_insert AFTER INSERT ON workflows BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Workflow"]', json_object('name', NEW.name, 'description', NEW.description, 'version', NEW.version), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Workflow')
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'BELONGS_TO', NEW.id, NEW.project_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_AGENT', NEW.id, n.id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        FROM json_each(NEW.definition, '$.steps') s JOIN graph_nodes n ON n.id = unhex(replace(json_extract(s.value, '$.agent_id'), '-', '')) AND n.organization_id = NEW.organization_id
        WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id)
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_TEAM', NEW.id, n.id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        FROM json_each(NEW.definition, '$.steps') s JOIN graph_nodes n ON n.id = unhex(replace(json_extract(s.value, '$.team_id'), '-', '')) AND n.organization_id = NEW.organization_id
        WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER workflows_graph_update AFTER UPDATE OF name, description, version, project_id, definition ON workflows BEGIN
    INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
        VALUES (NEW.id, NEW.organization_id, 'control_plane', lower(substr(hex(NEW.id), 1, 8) || '-' || substr(hex(NEW.id), 9, 4) || '-' || substr(hex(NEW.id), 13, 4) || '-' || substr(hex(NEW.id), 17, 4) || '-' || substr(hex(NEW.id), 21)), '["Workflow"]', json_object('name', NEW.name, 'description', NEW.description, 'version', NEW.version), NEW.name, NEW.created_at, NEW.updated_at)
        ON CONFLICT (id) DO UPDATE SET properties = excluded.properties, name = excluded.name, updated_at = excluded.updated_at;
    INSERT INTO graph_node_labels (node_id, organization_id, label) VALUES (NEW.id, NEW.organization_id, 'Workflow')
        ON CONFLICT DO NOTHING;
    DELETE FROM graph_relationships WHERE from_id = NEW.id AND type = 'BELONGS_TO' AND integration = 'control_plane'
        AND NEW.project_id IS NOT OLD.project_id;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'BELONGS_TO', NEW.id, NEW.project_id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id) AND NEW.project_id IS NOT OLD.project_id
        ON CONFLICT DO NOTHING;
    DELETE FROM graph_relationships WHERE from_id = NEW.id AND type IN ('USES_AGENT', 'USES_TEAM')
        AND integration = 'control_plane';
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_AGENT', NEW.id, n.id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        FROM json_each(NEW.definition, '$.steps') s JOIN graph_nodes n ON n.id = unhex(replace(json_extract(s.value, '$.agent_id'), '-', '')) AND n.organization_id = NEW.organization_id
        WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id)
        ON CONFLICT DO NOTHING;
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_TEAM', NEW.id, n.id, 'control_plane', '{}', NEW.updated_at, NEW.updated_at
        FROM json_each(NEW.definition, '$.steps') s JOIN graph_nodes n ON n.id = unhex(replace(json_extract(s.value, '$.team_id'), '-', '')) AND n.organization_id = NEW.organization_id
        WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER workflows_graph_delete AFTER DELETE ON workflows BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.id OR to_id = OLD.id;
    DELETE FROM graph_node_labels WHERE node_id = OLD.id;
    DELETE FROM graph_nodes WHERE id = OLD.id;
END;

CREATE TRIGGER team_members_graph_insert AFTER INSERT ON team_members BEGIN
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'MEMBER_OF', NEW.agent_id, NEW.team_id, 'control_plane', '{}', NEW.added_at, NEW.added_at
        WHERE NEW.team_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.agent_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.team_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER team_members_graph_delete AFTER DELETE ON team_members BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.agent_id AND type = 'MEMBER_OF' AND to_id = OLD.team_id
        AND integration = 'control_plane';
END;

CREATE TRIGGER agent_environments_graph_insert AFTER INSERT ON agent_environments BEGIN
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'RUNS_IN', NEW.agent_id, NEW.environment_id, 'control_plane', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.agent_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER agent_environments_graph_delete AFTER DELETE ON agent_environments BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.agent_id AND type = 'RUNS_IN' AND to_id = OLD.environment_id
        AND integration = 'control_plane';
END;

CREATE TRIGGER team_environments_graph_insert AFTER INSERT ON team_environments BEGIN
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'RUNS_IN', NEW.team_id, NEW.environment_id, 'control_plane', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
        WHERE NEW.environment_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.team_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.environment_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER team_environments_graph_delete AFTER DELETE ON team_environments BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.team_id AND type = 'RUNS_IN' AND to_id = OLD.environment_id
        AND integration = 'control_plane';
END;

CREATE TRIGGER skill_associations_graph_insert AFTER INSERT ON skill_associations BEGIN
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'USES_SKILL', COALESCE(NEW.agent_id, NEW.team_id, NEW.environment_id), NEW.skill_id, 'control_plane', '{}', NEW.created_at, NEW.created_at
        WHERE NEW.skill_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = COALESCE(NEW.agent_id, NEW.team_id, NEW.environment_id) AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.skill_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER skill_associations_graph_delete AFTER DELETE ON skill_associations BEGIN
    DELETE FROM graph_relationships WHERE from_id = COALESCE(OLD.agent_id, OLD.team_id, OLD.environment_id) AND type = 'USES_SKILL' AND to_id = OLD.skill_id
        AND integration = 'control_plane';
END;

CREATE TRIGGER project_agents_graph_insert AFTER INSERT ON project_agents BEGIN
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'BELONGS_TO', NEW.agent_id, NEW.project_id, 'control_plane', '{}', NEW.added_at, NEW.added_at
        WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.agent_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER project_agents_graph_delete AFTER DELETE ON project_agents BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.agent_id AND type = 'BELONGS_TO' AND to_id = OLD.project_id
        AND integration = 'control_plane';
END;

CREATE TRIGGER project_teams_graph_insert AFTER INSERT ON project_teams BEGIN
    INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
        SELECT randomblob(16), NEW.organization_id, 'BELONGS_TO', NEW.team_id, NEW.project_id, 'control_plane', '{}', NEW.added_at, NEW.added_at
        WHERE NEW.project_id IS NOT NULL AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.team_id AND organization_id = NEW.organization_id)
          AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = NEW.project_id AND organization_id = NEW.organization_id)
        ON CONFLICT DO NOTHING;
END;

CREATE TRIGGER project_teams_graph_delete AFTER DELETE ON project_teams BEGIN
    DELETE FROM graph_relationships WHERE from_id = OLD.team_id AND type = 'BELONGS_TO' AND to_id = OLD.project_id
        AND integration = 'control_plane';
END;

-- What existed before this migration.
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Project"]', json_object('name', e.name, 'key', e.key, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM projects e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Project' FROM projects;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Environment"]', json_object('name', e.name, 'display_name', e.display_name, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM environments e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Environment' FROM environments;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Model"]', json_object('name', e.value, 'label', e.label, 'provider', e.provider, 'model_type', e.model_type, 'enabled', CASE WHEN e.enabled THEN json('true') ELSE json('false') END), e.value, e.created_at, e.updated_at FROM models e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Model' FROM models;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Skill"]', json_object('name', e.name, 'skill_type', e.skill_type, 'description', e.description, 'enabled', CASE WHEN e.enabled THEN json('true') ELSE json('false') END), e.name, e.created_at, e.updated_at FROM skills e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Skill' FROM skills;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Agent"]', json_object('name', e.name, 'description', e.description, 'status', e.status, 'runtime', e.runtime), e.name, e.created_at, e.updated_at FROM agents e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Agent' FROM agents;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Team"]', json_object('name', e.name, 'description', e.description, 'status', e.status, 'runtime', e.runtime), e.name, e.created_at, e.updated_at FROM teams e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Team' FROM teams;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["WorkerQueue"]', json_object('name', e.name, 'display_name', e.display_name, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM worker_queues e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'WorkerQueue' FROM worker_queues;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Integration"]', json_object('name', e.name, 'integration_type', e.integration_type, 'description', e.description, 'status', e.status), e.name, e.created_at, e.updated_at FROM integrations e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Integration' FROM integrations;
INSERT INTO graph_nodes (id, organization_id, integration, external_id, labels, properties, name, created_at, updated_at)
    SELECT e.id, e.organization_id, 'control_plane', lower(substr(hex(e.id), 1, 8) || '-' || substr(hex(e.id), 9, 4) || '-' || substr(hex(e.id), 13, 4) || '-' || substr(hex(e.id), 17, 4) || '-' || substr(hex(e.id), 21)), '["Workflow"]', json_object('name', e.name, 'description', e.description, 'version', e.version), e.name, e.created_at, e.updated_at FROM workflows e;
INSERT INTO graph_node_labels (node_id, organization_id, label) SELECT id, organization_id, 'Workflow' FROM workflows;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'USES_MODEL', e.id, e.model_id, 'control_plane', '{}', e.updated_at, e.updated_at
    FROM agents e WHERE e.model_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.model_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'USES_MODEL', e.id, e.model_id, 'control_plane', '{}', e.updated_at, e.updated_at
    FROM teams e WHERE e.model_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.model_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'BELONGS_TO', e.id, e.environment_id, 'control_plane', '{}', e.updated_at, e.updated_at
    FROM worker_queues e WHERE e.environment_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.environment_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'BELONGS_TO', e.id, e.project_id, 'control_plane', '{}', e.updated_at, e.updated_at
    FROM workflows e WHERE e.project_id IS NOT NULL
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.project_id AND organization_id = e.organization_id);
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), organization_id, 'USES_AGENT', wid, nid, 'control_plane', '{}', at, at FROM (
        SELECT DISTINCT e.organization_id, e.id AS wid, n.id AS nid, e.updated_at AS at FROM workflows e, json_each(e.definition, '$.steps') s
        JOIN graph_nodes n ON n.id = unhex(replace(json_extract(s.value, '$.agent_id'), '-', '')) WHERE n.organization_id = e.organization_id) w;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), organization_id, 'USES_TEAM', wid, nid, 'control_plane', '{}', at, at FROM (
        SELECT DISTINCT e.organization_id, e.id AS wid, n.id AS nid, e.updated_at AS at FROM workflows e, json_each(e.definition, '$.steps') s
        JOIN graph_nodes n ON n.id = unhex(replace(json_extract(s.value, '$.team_id'), '-', '')) WHERE n.organization_id = e.organization_id) w;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'MEMBER_OF', e.agent_id, e.team_id, 'control_plane', '{}', e.added_at, e.added_at
    FROM team_members e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.agent_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.team_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'RUNS_IN', e.agent_id, e.environment_id, 'control_plane', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM agent_environments e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.agent_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.environment_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'RUNS_IN', e.team_id, e.environment_id, 'control_plane', '{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM team_environments e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.team_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.environment_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'USES_SKILL', COALESCE(e.agent_id, e.team_id, e.environment_id), e.skill_id, 'control_plane', '{}', e.created_at, e.created_at
    FROM skill_associations e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = COALESCE(e.agent_id, e.team_id, e.environment_id) AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.skill_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'BELONGS_TO', e.agent_id, e.project_id, 'control_plane', '{}', e.added_at, e.added_at
    FROM project_agents e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.agent_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.project_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
INSERT INTO graph_relationships (id, organization_id, type, from_id, to_id, integration, properties, created_at, updated_at)
    SELECT randomblob(16), e.organization_id, 'BELONGS_TO', e.team_id, e.project_id, 'control_plane', '{}', e.added_at, e.added_at
    FROM project_teams e WHERE EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.team_id AND organization_id = e.organization_id)
      AND EXISTS (SELECT 1 FROM graph_nodes WHERE id = e.project_id AND organization_id = e.organization_id) ON CONFLICT DO NOTHING;
