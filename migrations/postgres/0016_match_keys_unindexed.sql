-- SQLite dropped its (key, seq) index on match_keys here: its dedup looks keys up in
-- memory. PostgreSQL's workers commit concurrently and look them up in the store, so
-- the index stays; this migration only keeps the two histories numbered alike.
SELECT 1;
