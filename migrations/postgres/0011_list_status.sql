-- A manager's list filtered by status reads each team member's newest rows from the
-- owner index; with the status in the index those reads need no table access.
DROP INDEX leads_owner_updated_idx;
CREATE INDEX leads_owner_updated_idx ON leads (owner_id, updated_at, id) INCLUDE (status);
