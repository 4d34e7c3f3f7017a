-- The audit trail's lookups by record and by actor, off the write path (see the SQLite
-- migration of the same number): rows go into the log alone, `Store::index_audit` copies
-- their keys here in sorted batches under the chain's lock (so no row with a lower `seq`
-- can still commit), and lookups read these tables up to `audit_indexed.through` and the
-- log's tail above it.
CREATE TABLE audit_record_index (
    record_kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (record_kind, record_id, seq)
);
CREATE TABLE audit_actor_index (
    actor TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (actor, seq)
);
CREATE TABLE audit_indexed (
    id BIGINT PRIMARY KEY,
    through BIGINT NOT NULL
);
INSERT INTO audit_record_index (record_kind, record_id, seq)
SELECT record_kind, record_id, seq FROM audit_log ORDER BY record_kind, record_id, seq;
INSERT INTO audit_actor_index (actor, seq)
SELECT actor, seq FROM audit_log ORDER BY actor, seq;
INSERT INTO audit_indexed (id, through) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_log;
DROP INDEX audit_log_record_idx;
DROP INDEX audit_log_actor_idx;
