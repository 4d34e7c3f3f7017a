-- Outbound nurturing: email templates, sequences and enrolments, the durable email outbox,
-- the suppression list and tracked engagement. These are work and configuration tables
-- beside the records; what a lead sees and does lands on its timeline as activities
-- (written through the audited write path).

CREATE TABLE email_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT NOT NULL,
    -- JSON array of the variable names the template uses (checked when saved).
    variables TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE sequences (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- The sending identity (From address); daily limits count per mailbox.
    mailbox TEXT NOT NULL,
    -- JSON array of steps.
    steps TEXT NOT NULL,
    -- JSON enrolment rule, or NULL for enrolment by hand only.
    enrol_rule TEXT,
    active BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- status: active → completed | exited (exit_reason says why).
CREATE TABLE sequence_enrolments (
    id TEXT PRIMARY KEY,
    sequence_id TEXT NOT NULL,
    lead_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    status TEXT NOT NULL,
    exit_reason TEXT,
    next_at TEXT NOT NULL,
    last_outbox_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (sequence_id, lead_id)
);

CREATE INDEX sequence_enrolments_due_idx ON sequence_enrolments (status, next_at);

-- One row per email to send. status: pending → sending (claimed until lease_until) →
-- sent | failed | suppressed. message_id is fixed when queued, so every attempt of one
-- email carries the same Message-ID.
CREATE TABLE email_outbox (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    mailbox TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT NOT NULL,
    lead_id TEXT,
    activity_id TEXT,
    enrolment_id TEXT,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_until TEXT,
    provider_id TEXT,
    error TEXT,
    sent_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX email_outbox_due_idx ON email_outbox (status, next_attempt_at);
CREATE INDEX email_outbox_mailbox_sent_idx ON email_outbox (mailbox, sent_at);

-- Addresses no email goes to (lower-case). reason: unsubscribed | bounced | complained | manual.
CREATE TABLE email_suppressions (
    email TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Opens, clicks, unsubscribes of sent emails; bot = 1 marks scanner fetches (kept, not counted).
CREATE TABLE email_events (
    id TEXT PRIMARY KEY,
    outbox_id TEXT NOT NULL,
    event TEXT NOT NULL,
    bot BIGINT NOT NULL,
    url TEXT,
    user_agent TEXT,
    created_at TEXT NOT NULL
);

CREATE INDEX email_events_outbox_idx ON email_events (outbox_id, event);

-- Process-wide settings kept in the store (the tracking-link key when none is configured,
-- so every node of a deployment signs alike).
CREATE TABLE nurture_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
