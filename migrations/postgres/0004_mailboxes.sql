-- IMAP mailboxes: per mailbox the folder's UIDVALIDITY and the highest UID whose message
-- is durable in the inbox. A new UIDVALIDITY starts over (the inbox's external id, the
-- Message-ID, keeps re-fetched messages from becoming second records).

CREATE TABLE mailbox_state (
    mailbox TEXT PRIMARY KEY,
    folder TEXT NOT NULL,
    uid_validity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
