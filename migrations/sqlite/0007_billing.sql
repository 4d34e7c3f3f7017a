-- Post-sales billing: orders, invoices, payments (issue 10, part 1).
--
-- Invoice numbers are gapless per series and year: each invoice insert increments its
-- series' counter row in the same transaction (UPDATE … RETURNING takes the row lock on
-- PostgreSQL; SQLite has one writer), so a rolled-back insert gives its number back.
CREATE TABLE invoice_counters (
    series TEXT NOT NULL,
    year INTEGER NOT NULL,
    last_value INTEGER NOT NULL,
    PRIMARY KEY (series, year)
);

-- Credit notes reduce what an invoice is owed; payment terms give the due date;
-- issued_at is when the invoice became immutable.
ALTER TABLE invoices ADD COLUMN amount_credited TEXT;
ALTER TABLE invoices ADD COLUMN payment_terms_days INTEGER;
ALTER TABLE invoices ADD COLUMN issued_at TEXT;
CREATE INDEX invoices_corrects_invoice_id_idx ON invoices (corrects_invoice_id) WHERE corrects_invoice_id IS NOT NULL;
CREATE INDEX invoices_status_due_idx ON invoices (status, due_date);

-- Provider payments (Stripe's payment intent) are found again by their reference when
-- a refund arrives.
CREATE INDEX payments_provider_ref_idx ON payments (provider, provider_ref) WHERE provider_ref IS NOT NULL;

-- An invoice line carries its product and discount, as an order line does.
ALTER TABLE invoice_lines ADD COLUMN discount TEXT;
ALTER TABLE invoice_lines ADD COLUMN product TEXT;
