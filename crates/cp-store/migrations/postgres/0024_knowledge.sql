-- Knowledge items (issue 25) and their full-text index. Keep in step with
-- ../sqlite/0024_knowledge.sql.
CREATE TABLE knowledge_items (
    doc BIGINT GENERATED ALWAYS AS IDENTITY,
    id UUID NOT NULL UNIQUE,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    tags JSONB NOT NULL DEFAULT '[]',
    source TEXT,
    project_id UUID REFERENCES projects(id) ON DELETE SET NULL,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    -- Title weighs most, then tags, then the body. A tsvector holds at most 1 MiB, which
    -- 180,000 characters of distinct four-byte words stay well under: only those are indexed.
    search TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('simple', tags::text), 'B')
        || setweight(to_tsvector('english', left(content, 180000)), 'C')
    ) STORED,
    PRIMARY KEY (doc)
);
CREATE INDEX knowledge_items_org ON knowledge_items(organization_id, id);
CREATE INDEX knowledge_items_search ON knowledge_items USING GIN (search);
