-- Access control and a tamper-evident audit trail.

-- Each audit row carries the hash of the one before it (by seq) and its own hash over
-- its content and that link; `leadgate audit verify` walks the chain.
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;

-- Append-only: no code path updates or deletes audit rows, and the store refuses it too.
-- Rows from before the chain existed (hash NULL) may be given their hash once.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
WHEN OLD.hash IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Row reach: a manager's owners are the users of the team tree under them.
CREATE INDEX users_team_id_idx ON users (team_id) WHERE team_id IS NOT NULL;
-- Lists sort by recency within an owner's records.
CREATE INDEX leads_owner_updated_idx ON leads (owner_id, updated_at, id);
CREATE INDEX leads_updated_idx ON leads (updated_at);

-- A bounce marks the address undeliverable on the records that carry it; sends skip it.
ALTER TABLE leads ADD COLUMN email_undeliverable INTEGER;
ALTER TABLE leads ADD COLUMN email_bounced_at TEXT;
ALTER TABLE contacts ADD COLUMN email_undeliverable INTEGER;
ALTER TABLE contacts ADD COLUMN email_bounced_at TEXT;

-- Survivorship by source priority: which source family last set each field of a lead.
ALTER TABLE leads ADD COLUMN field_sources TEXT;
