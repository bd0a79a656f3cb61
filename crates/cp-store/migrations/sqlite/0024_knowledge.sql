-- Knowledge items (issue 25) and their full-text index. Keep in step with
-- ../postgres/0024_knowledge.sql.
CREATE TABLE knowledge_items (
    -- The full-text index refers to rows by this number: an explicit INTEGER PRIMARY KEY keeps
    -- it stable (VACUUM may renumber an implicit rowid).
    doc INTEGER PRIMARY KEY,
    id BLOB NOT NULL UNIQUE,
    organization_id TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    source TEXT,
    project_id BLOB REFERENCES projects(id) ON DELETE SET NULL,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX knowledge_items_org ON knowledge_items(organization_id, id);

-- BM25 over title, content and tags, stemmed like PostgreSQL's `english` configuration.
CREATE VIRTUAL TABLE knowledge_fts USING fts5(
    title, content, tags,
    content = 'knowledge_items', content_rowid = 'doc',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_items BEGIN
    INSERT INTO knowledge_fts (rowid, title, content, tags) VALUES (NEW.doc, NEW.title, NEW.content, NEW.tags);
END;

CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_items BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, title, content, tags)
        VALUES ('delete', OLD.doc, OLD.title, OLD.content, OLD.tags);
END;

CREATE TRIGGER knowledge_fts_update AFTER UPDATE OF title, content, tags ON knowledge_items BEGIN
    INSERT INTO knowledge_fts (knowledge_fts, rowid, title, content, tags)
        VALUES ('delete', OLD.doc, OLD.title, OLD.content, OLD.tags);
    INSERT INTO knowledge_fts (rowid, title, content, tags) VALUES (NEW.doc, NEW.title, NEW.content, NEW.tags);
END;
