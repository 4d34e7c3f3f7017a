-- Post-sales service: ticket numbers, SLA timers and breaches, threading and follow-ups;
-- contract (renewals) reminders; expansion rules that fire once per account.

-- A ticket's number is its public name (`T-123`, the `[#T-123]` subject token).
ALTER TABLE tickets ADD COLUMN number INTEGER;
ALTER TABLE tickets ADD COLUMN first_response_breached_at TEXT;
ALTER TABLE tickets ADD COLUMN resolution_breached_at TEXT;
ALTER TABLE tickets ADD COLUMN closed_at TEXT;
-- The closed ticket a reply opened this one as a follow-up of.
ALTER TABLE tickets ADD COLUMN follow_up_of TEXT;
ALTER TABLE tickets ADD COLUMN reopened_count INTEGER;
-- Where replies arrive from: the first email's Message-ID, or `whatsapp:<phone>`.
ALTER TABLE tickets ADD COLUMN thread_key TEXT;
ALTER TABLE tickets ADD COLUMN assignment_rule TEXT;
-- Business seconds the SLA clock stood still (pending the customer, resolved, closed).
ALTER TABLE tickets ADD COLUMN sla_paused_seconds INTEGER;
CREATE UNIQUE INDEX tickets_number_key ON tickets (number);
CREATE INDEX tickets_thread_key_idx ON tickets (thread_key) WHERE thread_key IS NOT NULL;
-- The SLA evaluator's two questions, each answered from its own partial index: only
-- running, unbreached timers are in them, so a pass reads the due ones and nothing else.
CREATE INDEX tickets_first_response_open_idx ON tickets (first_response_due)
    WHERE first_responded_at IS NULL AND first_response_breached_at IS NULL
      AND sla_paused_at IS NULL AND resolved_at IS NULL;
CREATE INDEX tickets_resolution_open_idx ON tickets (resolution_due)
    WHERE resolution_breached_at IS NULL AND sla_paused_at IS NULL AND resolved_at IS NULL;

-- Gapless, race-free ticket numbers: one row per counter, incremented in the write
-- transaction that uses the number.
CREATE TABLE service_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO service_counters (name, value) VALUES ('tickets', 0);

-- Contracts (the renewals table): when the owner was reminded, and the contract that
-- renewed this one.
ALTER TABLE renewals ADD COLUMN reminded_at TEXT;
ALTER TABLE renewals ADD COLUMN successor_id TEXT;
CREATE INDEX renewals_status_idx ON renewals (status);

-- An expansion rule opens its opportunity once per account: this row, written in the
-- opportunity's transaction, is the "once".
CREATE TABLE expansion_matches (
    rule TEXT NOT NULL,
    account_id TEXT NOT NULL,
    opportunity_id TEXT NOT NULL,
    matched_at TEXT NOT NULL,
    PRIMARY KEY (rule, account_id)
);
