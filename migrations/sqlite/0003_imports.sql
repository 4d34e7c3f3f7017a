-- Spreadsheet imports: one row per uploaded file (deduplicated by content hash), and the
-- rows refused while reading it. Rows that were read become inbox rows of source
-- `import:<id>` with external_id `row:<n>`; their processing state lives there.

CREATE TABLE imports (
    id TEXT PRIMARY KEY,
    file_name TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    sheet TEXT,
    mapping TEXT,
    status TEXT NOT NULL,
    rows_read INTEGER NOT NULL DEFAULT 0,
    rows_accepted INTEGER NOT NULL DEFAULT 0,
    rows_rejected_at_read INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX imports_content_sha256_key ON imports (content_sha256);

CREATE TABLE import_row_errors (
    import_id TEXT NOT NULL,
    row_number INTEGER NOT NULL,
    column_name TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX import_row_errors_import_idx ON import_row_errors (import_id, row_number);
