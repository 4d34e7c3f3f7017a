-- Who follows the outbox and how far each has applied it. Rows every live consumer has
-- applied are pruned; a consumer not seen for a long time no longer holds pruning back
-- and, when it returns, finds it missed rows (below `outbox_pruned.through`) and rebuilds.
CREATE TABLE outbox_consumers (
    name TEXT PRIMARY KEY,
    checkpoint BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- The highest outbox seq pruned so far; also the row prunes and registrations lock, so a
-- consumer that registers is either seen by a prune or sees what it removed.
CREATE TABLE outbox_pruned (
    id BIGINT PRIMARY KEY,
    through BIGINT NOT NULL
);
INSERT INTO outbox_pruned (id, through) VALUES (1, 0);
