-- Embeddings of knowledge items (issue 25), made in the background by the organization's
-- embedding model. Keep in step with ../sqlite/0026_knowledge_embeddings.sql.

-- Raised by every write that changes what an item is embedded from (title, tags, content): a
-- vector is stored only for the revision it was made from, so a write racing the embedder
-- never leaves a stale vector behind.
ALTER TABLE knowledge_items ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

-- One vector per item. `space` names what made it (provider, address, model name): a vector
-- of another space, or of an older revision, is pending. `model_id` drops them with the model.
CREATE TABLE knowledge_embeddings (
    doc BIGINT PRIMARY KEY REFERENCES knowledge_items(doc) ON DELETE CASCADE,
    organization_id TEXT NOT NULL,
    model_id UUID NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    space TEXT NOT NULL,
    revision BIGINT NOT NULL,
    -- Unit length, as a little-endian f32 scale and one signed byte per dimension.
    vector BYTEA NOT NULL,
    embedded_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX knowledge_embeddings_org ON knowledge_embeddings(organization_id, space);
CREATE INDEX knowledge_embeddings_model ON knowledge_embeddings(model_id);

-- The embedder walks an organization's items in `doc` order.
CREATE INDEX knowledge_items_org_doc ON knowledge_items(organization_id, doc);
