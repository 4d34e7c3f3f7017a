-- Dedup's blocking keys are looked up in memory on SQLite (src/pipeline/blocking.rs),
-- which reads `match_keys` only by `seq`, its primary key. The (key, seq) index took a
-- random insert per key (about ten per lead) into a B-tree larger than the page cache,
-- and no statement reads it any more.
DROP INDEX match_keys_key_idx;
