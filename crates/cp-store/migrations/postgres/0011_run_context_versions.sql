-- A claim's run context (model key, execution environment, the organization's enforcement
-- mode) is cached under the catalog version too: secrets, integrations, custom integrations
-- and the organization's settings now move it as well.

CREATE CONSTRAINT TRIGGER secrets_catalog_version AFTER INSERT OR UPDATE OR DELETE ON secrets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();

CREATE CONSTRAINT TRIGGER integrations_catalog_version AFTER INSERT OR UPDATE OR DELETE ON integrations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();

CREATE CONSTRAINT TRIGGER custom_integrations_catalog_version AFTER INSERT OR UPDATE OR DELETE ON custom_integrations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_catalog_version();

CREATE FUNCTION bump_org_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO catalog_versions (organization_id, version) VALUES (NEW.id, 1)
        ON CONFLICT (organization_id) DO UPDATE SET version = catalog_versions.version + 1;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER organizations_catalog_version AFTER UPDATE ON organizations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_org_catalog_version();
