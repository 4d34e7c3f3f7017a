-- The audit trail, narrower per row: it is written once for every changed field, so each
-- byte of a row and each index entry is paid on every change.
-- * `seq` without AUTOINCREMENT: AUTOINCREMENT updates `sqlite_sequence` in every writing
--   transaction. It only matters when the largest rowid can be deleted and its number
--   reused; the triggers below refuse every delete, so max(seq) + 1 stays monotonic.
-- * The hash as 32 bytes rather than 64 hex characters, and no `prev_hash`: it was a copy
--   of the previous row's hash, which the verifier reads from that row instead. What a
--   hash covers is unchanged (SHA-256 of the previous hash in hex and the row's JSON), so
--   chains written before this migration still verify.
-- * Indexes without the columns SQLite adds anyway: every index entry ends with the
--   rowid (`seq`), so (record_kind, record_id) is ordered by seq within a record, and
--   (actor) by seq within an actor, which is how `GET /v1/audit?actor=` and import undo
--   page through it; `at` made each actor entry 27 bytes wider and served no query.
DROP TRIGGER audit_log_no_update;
DROP TRIGGER audit_log_no_delete;
CREATE TABLE audit_log_narrow (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    channel TEXT NOT NULL,
    action TEXT NOT NULL,
    record_kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    field TEXT,
    old_value TEXT,
    new_value TEXT,
    ip TEXT,
    user_agent TEXT,
    request_id TEXT,
    hash BLOB
);
-- A hash that is not 64 hex digits (an edited row) keeps its bytes, so the verifier still
-- names that row rather than the link step turning it into a row without a hash.
INSERT INTO audit_log_narrow (seq, at, actor, channel, action, record_kind, record_id,
    field, old_value, new_value, ip, user_agent, request_id, hash)
SELECT seq, at, actor, channel, action, record_kind, record_id, field, old_value,
    new_value, ip, user_agent, request_id,
    CASE WHEN length(hash) = 64 AND unhex(hash) IS NOT NULL THEN unhex(hash)
         ELSE CAST(hash AS BLOB) END
FROM audit_log ORDER BY seq;
DROP TABLE audit_log;
ALTER TABLE audit_log_narrow RENAME TO audit_log;
CREATE INDEX audit_log_record_idx ON audit_log (record_kind, record_id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor);

-- Append-only, as before: rows from before the chain existed (hash NULL) may be given
-- their hash once.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN OLD.hash IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
