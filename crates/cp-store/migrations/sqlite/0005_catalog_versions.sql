-- A per-organization counter that moves whenever anything an agent or team list embeds
-- changes, so the server can serve a cached list body after one primary-key read. Triggers
-- keep it, so no write path can forget to bump it. No foreign key: an organization's delete
-- cascades through these tables and their triggers must not fail on the vanished parent.
CREATE TABLE catalog_versions (
    organization_id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);

CREATE TRIGGER agents_catalog_insert AFTER INSERT ON agents BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agents_catalog_update AFTER UPDATE ON agents BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agents_catalog_delete AFTER DELETE ON agents BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER teams_catalog_insert AFTER INSERT ON teams BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER teams_catalog_update AFTER UPDATE ON teams BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER teams_catalog_delete AFTER DELETE ON teams BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER models_catalog_insert AFTER INSERT ON models BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER models_catalog_update AFTER UPDATE ON models BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER models_catalog_delete AFTER DELETE ON models BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER skills_catalog_insert AFTER INSERT ON skills BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER skills_catalog_update AFTER UPDATE ON skills BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER skills_catalog_delete AFTER DELETE ON skills BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER environments_catalog_insert AFTER INSERT ON environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER environments_catalog_update AFTER UPDATE ON environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER environments_catalog_delete AFTER DELETE ON environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER projects_catalog_insert AFTER INSERT ON projects BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER projects_catalog_update AFTER UPDATE ON projects BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER projects_catalog_delete AFTER DELETE ON projects BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER team_members_catalog_insert AFTER INSERT ON team_members BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER team_members_catalog_update AFTER UPDATE ON team_members BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER team_members_catalog_delete AFTER DELETE ON team_members BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agent_environments_catalog_insert AFTER INSERT ON agent_environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agent_environments_catalog_update AFTER UPDATE ON agent_environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER agent_environments_catalog_delete AFTER DELETE ON agent_environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER team_environments_catalog_insert AFTER INSERT ON team_environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER team_environments_catalog_update AFTER UPDATE ON team_environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER team_environments_catalog_delete AFTER DELETE ON team_environments BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER skill_associations_catalog_insert AFTER INSERT ON skill_associations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER skill_associations_catalog_update AFTER UPDATE ON skill_associations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER skill_associations_catalog_delete AFTER DELETE ON skill_associations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER project_agents_catalog_insert AFTER INSERT ON project_agents BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER project_agents_catalog_update AFTER UPDATE ON project_agents BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER project_agents_catalog_delete AFTER DELETE ON project_agents BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER project_teams_catalog_insert AFTER INSERT ON project_teams BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER project_teams_catalog_update AFTER UPDATE ON project_teams BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER project_teams_catalog_delete AFTER DELETE ON project_teams BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;
