-- Outbound messages (WhatsApp first-touch replies and the send API): a queue beside the
-- message activity it reports on. The activity is the record (written through the audited
-- write path); this row is the sender's work item: recipient, content, attempts, when next.
-- status: pending → sending → sent | failed.

CREATE TABLE outbound_messages (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    provider_id TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX outbound_messages_due_idx ON outbound_messages (status, next_attempt_at);

-- Status webhooks find their message activity by the provider's message id.
CREATE INDEX activities_external_id_idx ON activities (external_id) WHERE external_id IS NOT NULL;
