-- Settings of the installation itself (not of an organization): the master key's check value,
-- so a server given another key refuses to start instead of failing every decryption.
CREATE TABLE instance_settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
