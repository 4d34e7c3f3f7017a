-- Address and birth date on leads, used by matching.
ALTER TABLE leads ADD COLUMN street TEXT;
ALTER TABLE leads ADD COLUMN street2 TEXT;
ALTER TABLE leads ADD COLUMN postal_code TEXT;
ALTER TABLE leads ADD COLUMN region TEXT;
ALTER TABLE leads ADD COLUMN birth_date TEXT;

-- Enrichment: what the address and phone tell about the lead.
ALTER TABLE leads ADD COLUMN email_type TEXT;
ALTER TABLE leads ADD COLUMN company_key TEXT;
ALTER TABLE leads ADD COLUMN time_zone TEXT;

-- Qualification: BANT and MEDDICC answers, and whether the configured set is complete.
ALTER TABLE leads ADD COLUMN budget TEXT;
ALTER TABLE leads ADD COLUMN authority TEXT;
ALTER TABLE leads ADD COLUMN need TEXT;
ALTER TABLE leads ADD COLUMN timeline TEXT;
ALTER TABLE leads ADD COLUMN metrics TEXT;
ALTER TABLE leads ADD COLUMN economic_buyer TEXT;
ALTER TABLE leads ADD COLUMN decision_criteria TEXT;
ALTER TABLE leads ADD COLUMN decision_process TEXT;
ALTER TABLE leads ADD COLUMN identified_pain TEXT;
ALTER TABLE leads ADD COLUMN champion TEXT;
ALTER TABLE leads ADD COLUMN competition TEXT;
ALTER TABLE leads ADD COLUMN qualified INTEGER;
ALTER TABLE leads ADD COLUMN qualified_at TEXT;

-- Scoring: score = fit_score + behaviour_score.
ALTER TABLE leads ADD COLUMN fit_score INTEGER;
ALTER TABLE leads ADD COLUMN behaviour_score INTEGER;
-- Behaviour points fade: the last time decay was applied.
ALTER TABLE leads ADD COLUMN behaviour_decayed_at TEXT;
CREATE INDEX leads_behaviour_idx ON leads (behaviour_decayed_at) WHERE behaviour_score > 0;

-- Dedup memory. Every record that reached a lead (the first and each one merged into it)
-- is a member with its own normalised values, so a later arrival is compared with each
-- variant seen, not only with the merged result. Keys are the matcher's blocking keys.
CREATE TABLE match_members (
    id TEXT PRIMARY KEY,
    record_kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    source_id TEXT,
    match_values TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX match_members_record_idx ON match_members (record_kind, record_id);

CREATE TABLE match_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key INTEGER NOT NULL,
    member_id TEXT NOT NULL
);
CREATE INDEX match_keys_key_idx ON match_keys (key, seq);

-- Pairs a steward decides: scored between the review and merge thresholds.
CREATE TABLE review_pairs (
    id TEXT PRIMARY KEY,
    record_kind TEXT NOT NULL,
    record_a TEXT NOT NULL,
    record_b TEXT NOT NULL,
    score REAL NOT NULL,
    breakdown TEXT NOT NULL,
    status TEXT NOT NULL,
    inbound_id TEXT,
    decided_by TEXT,
    decided_at TEXT,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX review_pairs_pair_key ON review_pairs (record_kind, record_a, record_b);
CREATE INDEX review_pairs_open_idx ON review_pairs (created_at) WHERE status = 'open';

-- Round-robin position per team, shared by every worker.
CREATE TABLE assignment_cursors (
    team_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
