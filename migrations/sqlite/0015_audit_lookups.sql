-- The audit trail's lookups by record and by actor, off the write path. Each audit row
-- was an insert into the middle of the (record_kind, record_id) index and one into the
-- actor index, in the change's own transaction: about two thirds of what auditing a
-- change cost SQLite. The rows now go into the log alone (an append), and
-- `Store::index_audit` copies their keys into these two tables in sorted batches, a
-- second or so behind, moving `audit_indexed.through` in the same transaction. A lookup
-- reads the table for rows up to `through` and the log's tail above it (a range of
-- `seq`), so it never misses a row, however far behind the batches are.
-- The log and its hash chain are unchanged, and still written in the change's
-- transaction.
CREATE TABLE audit_record_index (
    record_kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (record_kind, record_id, seq)
) WITHOUT ROWID;
CREATE TABLE audit_actor_index (
    actor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (actor, seq)
) WITHOUT ROWID;
-- One row: every audit row with `seq <= through` is in both tables.
CREATE TABLE audit_indexed (
    id INTEGER PRIMARY KEY,
    through INTEGER NOT NULL
);
INSERT INTO audit_record_index (record_kind, record_id, seq)
SELECT record_kind, record_id, seq FROM audit_log ORDER BY record_kind, record_id, seq;
INSERT INTO audit_actor_index (actor, seq)
SELECT actor, seq FROM audit_log ORDER BY actor, seq;
INSERT INTO audit_indexed (id, through) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_log;
DROP INDEX audit_log_record_idx;
DROP INDEX audit_log_actor_idx;
