-- The canonical store. Record tables are written only by the audited write path
-- (src/store/write.rs); their columns match src/domain/kind.rs, which a test checks.

CREATE TABLE leads (
    id TEXT PRIMARY KEY,
    status TEXT,
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    phone TEXT,
    company TEXT,
    title TEXT,
    website TEXT,
    country TEXT,
    city TEXT,
    source TEXT,
    campaign TEXT,
    utm_source TEXT,
    utm_medium TEXT,
    utm_campaign TEXT,
    utm_term TEXT,
    utm_content TEXT,
    consent_email BIGINT,
    consent_whatsapp BIGINT,
    score BIGINT DEFAULT 0,
    owner_id TEXT,
    account_id TEXT,
    contact_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX leads_email_idx ON leads (email) WHERE email IS NOT NULL;
CREATE INDEX leads_phone_idx ON leads (phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_owner_id_idx ON leads (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX leads_account_id_idx ON leads (account_id) WHERE account_id IS NOT NULL;

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT,
    domain TEXT,
    industry TEXT,
    employees BIGINT,
    annual_revenue TEXT,
    currency TEXT,
    country TEXT,
    city TEXT,
    phone TEXT,
    website TEXT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX accounts_domain_idx ON accounts (domain) WHERE domain IS NOT NULL;
CREATE INDEX accounts_owner_id_idx ON accounts (owner_id) WHERE owner_id IS NOT NULL;

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    account_id TEXT,
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    phone TEXT,
    mobile_phone TEXT,
    title TEXT,
    country TEXT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX contacts_email_idx ON contacts (email) WHERE email IS NOT NULL;
CREATE INDEX contacts_phone_idx ON contacts (phone) WHERE phone IS NOT NULL;
CREATE INDEX contacts_account_id_idx ON contacts (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX contacts_owner_id_idx ON contacts (owner_id) WHERE owner_id IS NOT NULL;

CREATE TABLE opportunities (
    id TEXT PRIMARY KEY,
    name TEXT,
    account_id TEXT,
    contact_id TEXT,
    lead_id TEXT,
    stage TEXT,
    amount TEXT,
    currency TEXT,
    probability BIGINT,
    close_date TEXT,
    forecast_category TEXT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX opportunities_account_id_idx ON opportunities (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX opportunities_owner_id_idx ON opportunities (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX opportunities_stage_idx ON opportunities (stage);

CREATE TABLE activities (
    id TEXT PRIMARY KEY,
    activity_type TEXT,
    subject TEXT,
    body TEXT,
    direction TEXT,
    channel TEXT,
    status TEXT,
    occurred_at TEXT,
    duration_seconds BIGINT,
    lead_id TEXT,
    contact_id TEXT,
    account_id TEXT,
    opportunity_id TEXT,
    ticket_id TEXT,
    external_id TEXT,
    inbound_id TEXT,
    owner_id TEXT,
    data TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX activities_lead_id_idx ON activities (lead_id) WHERE lead_id IS NOT NULL;
CREATE INDEX activities_contact_id_idx ON activities (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX activities_account_id_idx ON activities (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX activities_opportunity_id_idx ON activities (opportunity_id) WHERE opportunity_id IS NOT NULL;
CREATE INDEX activities_ticket_id_idx ON activities (ticket_id) WHERE ticket_id IS NOT NULL;
CREATE INDEX activities_inbound_id_idx ON activities (inbound_id) WHERE inbound_id IS NOT NULL;

CREATE TABLE sales_orders (
    id TEXT PRIMARY KEY,
    number TEXT,
    account_id TEXT,
    contact_id TEXT,
    opportunity_id TEXT,
    status TEXT,
    currency TEXT,
    subtotal TEXT,
    discount_total TEXT,
    tax_total TEXT,
    total TEXT,
    ordered_at TEXT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX sales_orders_account_id_idx ON sales_orders (account_id) WHERE account_id IS NOT NULL;

CREATE TABLE sales_order_lines (
    id TEXT PRIMARY KEY,
    order_id TEXT,
    position BIGINT,
    product TEXT,
    description TEXT,
    quantity TEXT,
    unit_price TEXT,
    discount TEXT,
    tax_rate TEXT,
    line_total TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX sales_order_lines_order_id_idx ON sales_order_lines (order_id) WHERE order_id IS NOT NULL;

CREATE TABLE invoices (
    id TEXT PRIMARY KEY,
    series TEXT,
    year BIGINT,
    sequence BIGINT,
    number TEXT,
    invoice_type TEXT,
    corrects_invoice_id TEXT,
    order_id TEXT,
    account_id TEXT,
    status TEXT,
    currency TEXT,
    issue_date TEXT,
    due_date TEXT,
    subtotal TEXT,
    tax_total TEXT,
    total TEXT,
    amount_paid TEXT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX invoices_account_id_idx ON invoices (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX invoices_order_id_idx ON invoices (order_id) WHERE order_id IS NOT NULL;
CREATE UNIQUE INDEX invoices_series_year_sequence_key ON invoices (series, year, sequence);

CREATE TABLE invoice_lines (
    id TEXT PRIMARY KEY,
    invoice_id TEXT,
    position BIGINT,
    description TEXT,
    quantity TEXT,
    unit_price TEXT,
    tax_rate TEXT,
    line_total TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX invoice_lines_invoice_id_idx ON invoice_lines (invoice_id) WHERE invoice_id IS NOT NULL;

CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    account_id TEXT,
    amount TEXT,
    currency TEXT,
    method TEXT,
    provider TEXT,
    provider_ref TEXT,
    received_at TEXT,
    status TEXT,
    refunded_amount TEXT,
    unallocated TEXT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX payments_account_id_idx ON payments (account_id) WHERE account_id IS NOT NULL;

CREATE TABLE payment_allocations (
    id TEXT PRIMARY KEY,
    payment_id TEXT,
    invoice_id TEXT,
    amount TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX payment_allocations_payment_id_idx ON payment_allocations (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX payment_allocations_invoice_id_idx ON payment_allocations (invoice_id) WHERE invoice_id IS NOT NULL;

CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    subject TEXT,
    description TEXT,
    status TEXT,
    priority TEXT,
    channel TEXT,
    account_id TEXT,
    contact_id TEXT,
    lead_id TEXT,
    owner_id TEXT,
    first_response_due TEXT,
    resolution_due TEXT,
    first_responded_at TEXT,
    resolved_at TEXT,
    sla_paused_at TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX tickets_account_id_idx ON tickets (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX tickets_contact_id_idx ON tickets (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX tickets_owner_id_idx ON tickets (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX tickets_status_idx ON tickets (status);

CREATE TABLE renewals (
    id TEXT PRIMARY KEY,
    account_id TEXT,
    contract_name TEXT,
    product TEXT,
    start_date TEXT,
    end_date TEXT,
    value TEXT,
    currency TEXT,
    renewal_terms TEXT,
    status TEXT,
    renewal_opportunity_id TEXT,
    amc_visits_per_year BIGINT,
    owner_id TEXT,
    custom TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX renewals_account_id_idx ON renewals (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX renewals_end_date_idx ON renewals (end_date) WHERE end_date IS NOT NULL;

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT,
    name TEXT,
    role_id TEXT,
    team_id TEXT,
    password_hash TEXT,
    active BIGINT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    name TEXT,
    parent_id TEXT,
    manager_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX teams_parent_id_idx ON teams (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    name TEXT,
    parent_id TEXT,
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT,
    principal TEXT,
    role_id TEXT,
    token_sha256 TEXT,
    expires_at TEXT,
    revoked_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX api_tokens_token_sha256_key ON api_tokens (token_sha256);

-- Indexes on optional columns are partial, so rows without a value cost no index write.

-- Every change of every record: one row per changed field (per record for inserts
-- and deletes, with the whole record as JSON), written in the change's transaction.
CREATE TABLE audit_log (
    seq BIGSERIAL PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    channel TEXT NOT NULL,
    action TEXT NOT NULL,
    record_kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    field TEXT,
    old_value TEXT,
    new_value TEXT,
    ip TEXT,
    user_agent TEXT,
    request_id TEXT
);
CREATE INDEX audit_log_record_idx ON audit_log (record_kind, record_id, seq);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at);

-- Changes committed to records, for the search index to follow after commit.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    record_kind TEXT NOT NULL,
    record_id TEXT NOT NULL,
    op TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- The durable inbox: every accepted inbound record, committed before the 2xx.
CREATE TABLE inbox (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    external_id TEXT,
    received_at TEXT NOT NULL,
    fields TEXT NOT NULL,
    raw BYTEA NOT NULL,
    request_id TEXT,
    ip TEXT,
    user_agent TEXT,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX inbox_source_external_key ON inbox (source, external_id);
CREATE INDEX inbox_open_idx ON inbox (seq) WHERE status IN ('pending', 'processing');
CREATE INDEX inbox_failed_idx ON inbox (seq) WHERE status = 'failed';

-- Idempotency-Key replays: the request's hash and the answer it got.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
