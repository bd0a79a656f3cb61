-- Requests each API key made in each one-minute window, shared by every replica: a replica
-- takes a slice of the key's limit at a time and counts it down in memory. UNLOGGED: the
-- counts are worth a minute, not a WAL write each; a crash empties the table, which at worst
-- lets a key start its current minute again.
CREATE UNLOGGED TABLE rate_windows (
    meter UUID NOT NULL,
    window_start BIGINT NOT NULL,
    used BIGINT NOT NULL,
    last_grant BIGINT NOT NULL,
    PRIMARY KEY (meter, window_start)
);
