-- A claim's run context (model key, execution environment, the organization's enforcement
-- mode) is cached under the catalog version too: secrets, integrations, custom integrations
-- and the organization's settings now move it as well.

CREATE TRIGGER secrets_catalog_insert AFTER INSERT ON secrets BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER secrets_catalog_update AFTER UPDATE ON secrets BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER secrets_catalog_delete AFTER DELETE ON secrets BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER integrations_catalog_insert AFTER INSERT ON integrations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER integrations_catalog_update AFTER UPDATE ON integrations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER integrations_catalog_delete AFTER DELETE ON integrations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER custom_integrations_catalog_insert AFTER INSERT ON custom_integrations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER custom_integrations_catalog_update AFTER UPDATE ON custom_integrations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER custom_integrations_catalog_delete AFTER DELETE ON custom_integrations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (OLD.organization_id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER organizations_catalog_update AFTER UPDATE ON organizations BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = version + 1;
END;
