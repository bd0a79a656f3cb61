-- PostgreSQL's shared rate windows (0017 there) have no SQLite counterpart: a SQLite database
-- has one server, which counts in memory. The number is kept so both backends list the same.
SELECT 1;
