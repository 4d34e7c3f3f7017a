-- The audit trail, narrower per row (see the SQLite migration of the same number): the
-- hash as 32 bytes rather than 64 hex characters, and no `prev_hash`, a copy of the
-- previous row's hash that the verifier reads from that row instead. What a hash covers
-- is unchanged, so chains written before this migration still verify. `seq` stays a
-- sequence: nextval writes no row of its own. A hash that is not 64 hex digits (an edited
-- row) keeps its bytes, so the verifier still names that row.
ALTER TABLE audit_log ALTER COLUMN hash TYPE BYTEA USING (
    CASE WHEN hash ~ '^[0-9a-fA-F]{64}$' THEN decode(hash, 'hex')
         ELSE convert_to(hash, 'UTF8') END
);
ALTER TABLE audit_log DROP COLUMN prev_hash;
-- `GET /v1/audit?actor=` and import undo page through an actor's rows by seq; `at` made
-- each entry 27 bytes wider and served neither.
DROP INDEX audit_log_actor_idx;
CREATE INDEX audit_log_actor_idx ON audit_log (actor, seq);
