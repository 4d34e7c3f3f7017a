-- What the pipeline made of each import's rows, counted in the transaction that settles
-- them (src/pipeline/worker.rs): an import's progress is read from its own row. Counting
-- its inbox rows on every `GET /v1/imports/{id}` read the whole import, payloads
-- included (seconds at a million rows), and the client polls it.
ALTER TABLE imports ADD COLUMN rows_created INTEGER NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN rows_merged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN rows_review INTEGER NOT NULL DEFAULT 0;
ALTER TABLE imports ADD COLUMN rows_failed INTEGER NOT NULL DEFAULT 0;

-- Imports made before: counted once, as the progress query counted them.
UPDATE imports SET
    rows_merged = (SELECT COUNT(*) FROM inbox WHERE source = 'import:' || imports.id
        AND status = 'done' AND result LIKE '%"action":"merged"%'),
    rows_review = (SELECT COUNT(*) FROM inbox WHERE source = 'import:' || imports.id
        AND status = 'done' AND result LIKE '%"action":"review"%'
        AND result NOT LIKE '%"action":"merged"%'),
    rows_created = (SELECT COUNT(*) FROM inbox WHERE source = 'import:' || imports.id
        AND status = 'done' AND result NOT LIKE '%"action":"merged"%'
        AND result NOT LIKE '%"action":"review"%'),
    rows_failed = (SELECT COUNT(*) FROM inbox WHERE source = 'import:' || imports.id
        AND status = 'failed');
