-- Daily limits count per mailbox address: "Sales <s@x>" and "s@x" are one mailbox. The
-- address is the lower-cased addr-spec of the From (nurture::config::address_of).
ALTER TABLE email_outbox ADD COLUMN mailbox_address TEXT NOT NULL DEFAULT '';
UPDATE email_outbox SET mailbox_address = lower(trim(CASE
    WHEN instr(mailbox, '<') > 0 AND instr(mailbox, '>') > instr(mailbox, '<')
    THEN substr(mailbox, instr(mailbox, '<') + 1, instr(mailbox, '>') - instr(mailbox, '<') - 1)
    ELSE mailbox END));
CREATE INDEX email_outbox_address_sent_idx ON email_outbox (mailbox_address, sent_at);

-- Claims that found the row still `sending` after its lease ran out: an earlier attempt
-- stopped unsettled and may have reached the server, so this email may arrive twice.
ALTER TABLE email_outbox ADD COLUMN reclaimed BIGINT NOT NULL DEFAULT 0;

-- Mailgun's webhook signature covers only `timestamp + token`, not the body, so a token
-- is good once: a token seen again with another body is refused. Rows older than the
-- timestamp tolerance are pruned (their timestamps are refused anyway).
CREATE TABLE email_webhook_tokens (
    provider TEXT NOT NULL,
    token TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (provider, token)
);

CREATE INDEX email_webhook_tokens_seen_idx ON email_webhook_tokens (seen_at);

-- The per-address index above serves the daily count now.
DROP INDEX email_outbox_mailbox_sent_idx;
