//! Orders, invoices and payments through the real server on both backends: exact totals,
//! the order flow, gapless invoice numbers under concurrency, immutability after issue,
//! credit notes, the PDF, payments with allocation, credit and refunds, Stripe, ageing.

mod common;

use std::collections::BTreeSet;

use common::{Backend, TestApp, spawn_app, spawn_app_with_config};
use leadgate::domain::RecordKind;
use leadgate::store::{Change, RequestMeta, WriteContext};
use serde_json::{Value, json};

on_both_backends!(
    an_order_totals_its_lines_exactly,
    an_order_line_with_a_negative_quantity_is_refused,
    an_order_refuses_an_illegal_transition,
    a_won_opportunity_becomes_one_order_and_its_invoice,
    concurrent_invoices_are_numbered_without_gaps,
    an_issued_invoice_is_immutable_and_corrected_by_a_credit_note,
    an_invoice_renders_as_a_pdf_with_its_lines,
    a_partial_payment_leaves_the_invoice_partially_paid,
    an_overpayment_is_held_as_account_credit,
    a_refund_larger_than_the_payment_is_refused,
    a_payment_in_another_currency_is_refused,
    stripe_events_are_verified_deduplicated_and_applied,
    the_ageing_report_buckets_what_is_owed_by_days_past_due,
    payments_import_from_a_spreadsheet,
    billing_is_permission_checked_searchable_and_documented,
    concurrent_payments_to_one_invoice_all_count,
);

async fn seed(app: &TestApp, kind: RecordKind, fields: Value) -> String {
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let Value::Object(fields) = fields else {
        panic!("object")
    };
    app.store
        .write(
            &ctx,
            vec![Change::Insert {
                kind,
                id: None,
                fields,
            }],
        )
        .await
        .expect("seed")[0]
        .id
        .clone()
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app.post_json(&app.admin_token, path, &body).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = post(app, path, body).await;
    assert_eq!(status, 201, "POST {path}: {answer}");
    answer
}

async fn account(app: &TestApp, name: &str) -> String {
    seed(app, RecordKind::Account, json!({"name": name})).await
}

/// An issued invoice of one line (no tax) for the account.
async fn issued_invoice(app: &TestApp, account: &str, amount: &str, currency: &str) -> Value {
    let answer = created(
        app,
        "/v1/invoices",
        json!({"account_id": account, "currency": currency, "issue": true,
               "lines": [{"product": "Service", "quantity": "1", "unit_price": amount}]}),
    )
    .await;
    answer["invoice"].clone()
}

async fn invoice(app: &TestApp, id: &str) -> Value {
    let (status, record) = app.get_json(&format!("/v1/invoices/{id}")).await;
    assert_eq!(status, 200, "{record}");
    record["fields"].clone()
}

async fn an_order_totals_its_lines_exactly(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Exact Ltd").await;
    let answer = created(
        &app,
        "/v1/orders",
        json!({"account_id": account, "currency": "eur", "lines": [
            {"product": "Widget", "quantity": "3", "unit_price": "19.99", "discount": "10", "tax_rate": "20"},
            {"product": "Support", "quantity": 1.5, "unit_price": "100", "tax_rate": "5"},
            {"product": "Cent", "quantity": "3", "unit_price": 0.1, "tax_rate": "20"},
        ]}),
    )
    .await;
    let order = &answer["order"]["fields"];
    assert_eq!(order["status"], "draft");
    assert_eq!(order["currency"], "EUR");
    // 59.97 + 150.00 + 0.30 gross; 5.997 → 6.00 off; 20% on 53.97 + 0.30, 5% on 150.
    assert_eq!(order["subtotal"], "210.27");
    assert_eq!(order["discount_total"], "6.00");
    assert_eq!(order["tax_total"], "18.35");
    assert_eq!(order["total"], "222.62");
    let lines = answer["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["fields"]["line_total"], "53.97");
    assert_eq!(lines[2]["fields"]["line_total"], "0.30");
    // The order is on the account's timeline.
    let (_, timeline) = app
        .get_json(&format!("/v1/accounts/{account}/timeline"))
        .await;
    assert!(
        timeline["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|a| a["fields"]["activity_type"] == "order"),
        "{timeline}"
    );
    app.stop().await;
}

async fn an_order_line_with_a_negative_quantity_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_json(
            &app.admin_token,
            "/v1/orders",
            &json!({"currency": "EUR", "lines": [
                {"product": "Fine", "quantity": "1", "unit_price": "5"},
                {"product": "Returned", "quantity": "-2", "unit_price": "5"},
            ]}),
        )
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("lines[1].quantity")),
        "{problem}"
    );
    let (_, orders) = app.get_json("/v1/orders").await;
    assert_eq!(orders["items"].as_array().map(Vec::len), Some(0));
    let (_, lines) = app.get_json("/v1/order_lines").await;
    assert_eq!(lines["items"].as_array().map(Vec::len), Some(0));
    app.stop().await;
}

async fn an_order_refuses_an_illegal_transition(backend: Backend) {
    let app = spawn_app(backend).await;
    let answer = created(
        &app,
        "/v1/orders",
        json!({"currency": "EUR", "lines": [{"quantity": "1", "unit_price": "5"}]}),
    )
    .await;
    let id = answer["order"]["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/orders/{id}/status");
    let (status, problem) = post(&app, &path, json!({"status": "fulfilled"})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["status"], 409);
    for next in ["confirmed", "fulfilled", "closed"] {
        let (status, answer) = post(&app, &path, json!({"status": next})).await;
        assert_eq!(status, 200, "{next}: {answer}");
        assert_eq!(answer["order"]["fields"]["status"], next);
    }
    let (status, _) = post(&app, &path, json!({"status": "cancelled"})).await;
    assert_eq!(status, 409);
    // Nor can the status be set around the flow.
    let response = app
        .client
        .patch(format!("{}/v1/orders/{id}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"status": "draft"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);
    app.stop().await;
}

async fn a_won_opportunity_becomes_one_order_and_its_invoice(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Won Inc").await;
    let open = seed(
        &app,
        RecordKind::Opportunity,
        json!({"name": "Pilot", "account_id": account, "stage": "proposal", "amount": "1200.00", "currency": "USD"}),
    )
    .await;
    let (status, _) = post(&app, &format!("/v1/opportunities/{open}/order"), json!({})).await;
    assert_eq!(status, 409, "an open opportunity is not ordered");
    let won = seed(
        &app,
        RecordKind::Opportunity,
        json!({"name": "Rollout", "account_id": account, "stage": "closed_won", "amount": "1200.00", "currency": "USD"}),
    )
    .await;
    let answer = created(&app, &format!("/v1/opportunities/{won}/order"), json!({})).await;
    let order = &answer["order"];
    assert_eq!(order["fields"]["account_id"], account.as_str());
    assert_eq!(order["fields"]["opportunity_id"], won.as_str());
    assert_eq!(order["fields"]["total"], "1200.00");
    let (status, _) = post(&app, &format!("/v1/opportunities/{won}/order"), json!({})).await;
    assert_eq!(status, 409, "once per opportunity");
    let order_id = order["id"].as_str().expect("id");
    let (status, _) = post(&app, &format!("/v1/orders/{order_id}/invoice"), json!({})).await;
    assert_eq!(status, 409, "a draft order is not invoiced");
    post(
        &app,
        &format!("/v1/orders/{order_id}/status"),
        json!({"status": "confirmed"}),
    )
    .await;
    let invoice = created(
        &app,
        &format!("/v1/orders/{order_id}/invoice"),
        json!({"payment_terms_days": 14, "issue_date": "2026-03-01"}),
    )
    .await;
    let fields = &invoice["invoice"]["fields"];
    assert_eq!(fields["order_id"], order_id);
    assert_eq!(fields["total"], "1200.00");
    assert_eq!(fields["due_date"], "2026-03-15");
    assert_eq!(fields["number"], "INV-2026-000001");
    app.stop().await;
}

async fn concurrent_invoices_are_numbered_without_gaps(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Busy plc").await;
    let mut tasks = Vec::new();
    for n in 0..16 {
        let (client, base, token, account) = (
            app.client.clone(),
            app.base.clone(),
            app.admin_token.clone(),
            account.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut numbers = Vec::new();
            for m in 0..4 {
                let response = client
                    .post(format!("{base}/v1/invoices"))
                    .bearer_auth(&token)
                    .json(&json!({"account_id": account, "currency": "EUR",
                        "issue_date": "2026-06-01",
                        "lines": [{"quantity": "1", "unit_price": format!("{n}.{m}0")}]}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 201);
                let body: Value = response.json().await.expect("json");
                numbers.push(body["invoice"]["fields"]["sequence"].as_i64().expect("seq"));
            }
            numbers
        }));
    }
    let mut sequences = BTreeSet::new();
    for task in tasks {
        for sequence in task.await.expect("task") {
            assert!(sequences.insert(sequence), "{sequence} given twice");
        }
    }
    assert_eq!(sequences, (1..=64).collect::<BTreeSet<i64>>());
    // Another series starts at one; a refused invoice takes no number.
    let refused = app
        .post_json(
            &app.admin_token,
            "/v1/invoices",
            &json!({"currency": "EUR", "issue_date": "2026-06-01",
                    "lines": [{"quantity": "-1", "unit_price": "1"}]}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let next = created(
        &app,
        "/v1/invoices",
        json!({"currency": "EUR", "issue_date": "2026-06-01", "lines": [{"quantity": "1", "unit_price": "1"}]}),
    )
    .await;
    assert_eq!(next["invoice"]["fields"]["number"], "INV-2026-000065");
    let other = created(
        &app,
        "/v1/invoices",
        json!({"currency": "EUR", "series": "EXP", "issue_date": "2026-06-01",
               "lines": [{"quantity": "1", "unit_price": "1"}]}),
    )
    .await;
    assert_eq!(other["invoice"]["fields"]["number"], "EXP-2026-000001");
    app.stop().await;
}

async fn an_issued_invoice_is_immutable_and_corrected_by_a_credit_note(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Fixes SA").await;
    let draft = created(
        &app,
        "/v1/invoices",
        json!({"account_id": account, "currency": "EUR", "lines": [
            {"product": "A", "quantity": "2", "unit_price": "50", "tax_rate": "20"},
            {"product": "B", "quantity": "1", "unit_price": "30", "tax_rate": "20"},
        ]}),
    )
    .await;
    let id = draft["invoice"]["id"].as_str().expect("id").to_owned();
    assert_eq!(draft["invoice"]["fields"]["status"], "draft");
    assert_eq!(draft["invoice"]["fields"]["total"], "156.00");
    assert_eq!(draft["tax_lines"][0]["tax"], "26.00");
    let patch = |body: Value| {
        app.client
            .patch(format!("{}/v1/invoices/{id}", app.base))
            .bearer_auth(&app.admin_token)
            .json(&body)
            .send()
    };
    // A draft takes descriptive edits but never amounts.
    assert_eq!(
        patch(json!({"custom": {"po": "PO-7"}}))
            .await
            .expect("sent")
            .status(),
        200
    );
    assert_eq!(
        patch(json!({"total": "1.00"}))
            .await
            .expect("sent")
            .status(),
        409
    );
    let (status, issued) = post(&app, &format!("/v1/invoices/{id}/issue"), json!({})).await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["invoice"]["fields"]["status"], "issued");
    let (status, _) = post(&app, &format!("/v1/invoices/{id}/issue"), json!({})).await;
    assert_eq!(status, 409, "issued once");
    let refused = patch(json!({"custom": {"po": "PO-8"}}))
        .await
        .expect("sent");
    assert_eq!(refused.status(), 409);
    let problem: Value = refused.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("credit note"))
    );
    let line = issued["lines"][0]["id"].as_str().expect("line id");
    let response = app
        .client
        .patch(format!("{}/v1/invoice_lines/{line}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"quantity": "3"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);
    let response = app
        .client
        .delete(format!("{}/v1/invoices/{id}", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409, "numbers stay gapless");
    assert_eq!(invoice(&app, &id).await["total"], "156.00");

    // Credit line B (30 + 20% tax).
    let note = created(
        &app,
        &format!("/v1/invoices/{id}/credit-notes"),
        json!({"reason": "B was not delivered",
               "lines": [{"product": "B", "quantity": "1", "unit_price": "30", "tax_rate": "20"}]}),
    )
    .await;
    let cn = &note["invoice"]["fields"];
    assert_eq!(cn["invoice_type"], "credit_note");
    assert_eq!(cn["corrects_invoice_id"], id.as_str());
    assert_eq!(cn["status"], "issued");
    assert_eq!(cn["total"], "36.00");
    assert!(
        cn["number"].as_str().is_some_and(|n| n.starts_with("CN-")),
        "{cn}"
    );
    let corrected = invoice(&app, &id).await;
    assert_eq!(corrected["amount_credited"], "36.00");
    assert_eq!(
        corrected["total"], "156.00",
        "the invoice itself is unchanged"
    );
    // More than what is left to credit is refused; the rest is fine.
    let (status, _) = post(
        &app,
        &format!("/v1/invoices/{id}/credit-notes"),
        json!({"lines": [{"quantity": "1", "unit_price": "121"}]}),
    )
    .await;
    assert_eq!(status, 422);
    // A misspelt body is refused, never read as "credit everything".
    let (status, _) = post(
        &app,
        &format!("/v1/invoices/{id}/credit-notes"),
        json!({"line": [{"quantity": "1", "unit_price": "1"}]}),
    )
    .await;
    assert_eq!(status, 400);
    let rest = created(
        &app,
        &format!("/v1/invoices/{id}/credit-notes"),
        json!({"lines": [{"product": "A", "quantity": "2", "unit_price": "50", "tax_rate": "20"}]}),
    )
    .await;
    assert_eq!(rest["invoice"]["fields"]["total"], "120.00");
    let credited = invoice(&app, &id).await;
    assert_eq!(credited["amount_credited"], "156.00");
    assert_eq!(credited["status"], "credited");
    // A whole-invoice credit note copies the lines.
    let other = created(
        &app,
        "/v1/invoices",
        json!({"currency": "EUR", "issue": true, "lines": [{"quantity": "3", "unit_price": "7.10"}]}),
    )
    .await;
    let other_id = other["invoice"]["id"].as_str().expect("id");
    let whole = created(
        &app,
        &format!("/v1/invoices/{other_id}/credit-notes"),
        json!({}),
    )
    .await;
    assert_eq!(whole["invoice"]["fields"]["total"], "21.30");
    assert_eq!(whole["lines"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

async fn an_invoice_renders_as_a_pdf_with_its_lines(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Paper Trail GmbH").await;
    let invoice = created(
        &app,
        "/v1/invoices",
        json!({"account_id": account, "currency": "EUR", "issue": true, "issue_date": "2026-02-03", "lines": [
            {"product": "Consulting", "description": "March", "quantity": "12.5", "unit_price": "80", "tax_rate": "19"},
        ]}),
    )
    .await;
    let id = invoice["invoice"]["id"].as_str().expect("id");
    let response = app
        .client
        .get(format!("{}/v1/invoices/{id}/pdf", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let bytes = response.bytes().await.expect("body");
    assert!(bytes.starts_with(b"%PDF-"));
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("invoice.pdf");
    std::fs::write(&path, &bytes).expect("write");
    let output = std::process::Command::new("pdftotext")
        .args(["-layout"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext runs (poppler-utils)");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "INVOICE",
        "INV-2026-000001",
        "Paper Trail GmbH",
        "2026-03-05",
        "Consulting - March",
        "1000.00",
        "Tax 19% on 1000.00",
        "190.00 EUR",
        "1190.00 EUR",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    app.stop().await;
}

async fn a_partial_payment_leaves_the_invoice_partially_paid(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Slow Pay BV").await;
    let invoice = issued_invoice(&app, &account, "100.00", "EUR").await;
    let id = invoice["id"].as_str().expect("id");
    let payment = created(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "40.00", "currency": "EUR", "invoice_id": id, "method": "bank_transfer"}),
    )
    .await;
    assert_eq!(payment["payment"]["fields"]["unallocated"], "0.00");
    assert_eq!(payment["allocations"][0]["fields"]["amount"], "40.00");
    let fields = self::invoice(&app, id).await;
    assert_eq!(fields["status"], "partially_paid");
    assert_eq!(fields["amount_paid"], "40.00");
    created(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "60.00", "currency": "EUR", "invoice_id": id}),
    )
    .await;
    let fields = self::invoice(&app, id).await;
    assert_eq!(fields["status"], "paid");
    assert_eq!(fields["amount_paid"], "100.00");
    // One payment across two invoices, oldest due first when none is named.
    let first = issued_invoice(&app, &account, "30.00", "EUR").await;
    let second = issued_invoice(&app, &account, "50.00", "EUR").await;
    let split = created(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "70.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(split["allocations"].as_array().map(Vec::len), Some(2));
    let first = self::invoice(&app, first["id"].as_str().expect("id")).await;
    let second = self::invoice(&app, second["id"].as_str().expect("id")).await;
    assert_eq!(first["status"], "paid");
    assert_eq!(second["status"], "partially_paid");
    assert_eq!(second["amount_paid"], "40.00");
    app.stop().await;
}

async fn an_overpayment_is_held_as_account_credit(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Generous Co").await;
    let invoice = issued_invoice(&app, &account, "80.00", "GBP").await;
    let id = invoice["id"].as_str().expect("id");
    let payment = created(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "100.00", "currency": "GBP", "invoice_id": id}),
    )
    .await;
    assert_eq!(payment["payment"]["fields"]["unallocated"], "20.00");
    assert_eq!(self::invoice(&app, id).await["status"], "paid");
    let (_, credit) = app
        .get_json(&format!("/v1/accounts/{account}/credit"))
        .await;
    assert_eq!(credit["credit"]["GBP"], "20.00");
    // The credit pays the next invoice.
    let next = issued_invoice(&app, &account, "15.00", "GBP").await;
    let payment_id = payment["payment"]["id"].as_str().expect("id");
    let next_id = next["id"].as_str().expect("id");
    let (status, after) = post(
        &app,
        &format!("/v1/payments/{payment_id}/allocations"),
        json!({"invoice_id": next_id}),
    )
    .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["payment"]["fields"]["unallocated"], "5.00");
    assert_eq!(self::invoice(&app, next_id).await["status"], "paid");
    let (_, credit) = app
        .get_json(&format!("/v1/accounts/{account}/credit"))
        .await;
    assert_eq!(credit["credit"]["GBP"], "5.00");
    app.stop().await;
}

async fn a_refund_larger_than_the_payment_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Refunds Ltd").await;
    let invoice = issued_invoice(&app, &account, "50.00", "EUR").await;
    let id = invoice["id"].as_str().expect("id");
    let payment = created(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "60.00", "currency": "EUR", "invoice_id": id}),
    )
    .await;
    let payment_id = payment["payment"]["id"].as_str().expect("id");
    let path = format!("/v1/payments/{payment_id}/refunds");
    let (status, problem) = post(&app, &path, json!({"amount": "60.01"})).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("larger"))
    );
    // 10 from the credit, 15 from the invoice, which then owes again.
    let (status, after) = post(&app, &path, json!({"amount": "25.00", "reason": "damaged"})).await;
    assert_eq!(status, 200, "{after}");
    let fields = &after["payment"]["fields"];
    assert_eq!(fields["refunded_amount"], "25.00");
    assert_eq!(fields["unallocated"], "0.00");
    assert_eq!(fields["status"], "partially_refunded");
    let invoice = self::invoice(&app, id).await;
    assert_eq!(invoice["amount_paid"], "35.00");
    assert_eq!(invoice["status"], "partially_paid");
    let (status, _) = post(&app, &path, json!({"amount": "35.01"})).await;
    assert_eq!(status, 422, "only 35.00 is left");
    let (status, after) = post(&app, &path, json!({"amount": "35.00"})).await;
    assert_eq!(status, 200);
    assert_eq!(after["payment"]["fields"]["status"], "refunded");
    assert_eq!(after["allocations"].as_array().map(Vec::len), Some(0));
    assert_eq!(self::invoice(&app, id).await["status"], "issued");
    app.stop().await;
}

async fn a_payment_in_another_currency_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Dollars Inc").await;
    let invoice = issued_invoice(&app, &account, "100.00", "USD").await;
    let id = invoice["id"].as_str().expect("id");
    let (status, problem) = post(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "100.00", "currency": "EUR", "invoice_id": id}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("currency mismatch")),
        "{problem}"
    );
    let (status, _) = post(
        &app,
        "/v1/payments",
        json!({"amount": "1.00", "currency": "USD", "invoice_id": "no-such-invoice"}),
    )
    .await;
    assert_eq!(status, 422, "an unknown invoice is bad input");
    let (_, payments) = app.get_json("/v1/payments").await;
    assert_eq!(
        payments["items"].as_array().map(Vec::len),
        Some(0),
        "nothing written"
    );
    assert_eq!(self::invoice(&app, id).await["amount_paid"], "0.00");
    // Without an invoice named, EUR money does not touch USD invoices: it is credit.
    let payment = created(
        &app,
        "/v1/payments",
        json!({"account_id": account, "amount": "10.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(payment["payment"]["fields"]["unallocated"], "10.00");
    app.stop().await;
}

const STRIPE_SECRET: &str = "whsec_test_secret";

async fn stripe(app: &TestApp, body: &Value, signature: Option<String>) -> reqwest::Response {
    let raw = serde_json::to_vec(body).expect("json");
    let signature = signature.unwrap_or_else(|| {
        connectors::stripe::sign(STRIPE_SECRET, chrono::Utc::now().timestamp(), &raw)
    });
    app.client
        .post(format!("{}/v1/webhooks/stripe", app.base))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(raw)
        .send()
        .await
        .expect("sent")
}

async fn stripe_events_are_verified_deduplicated_and_applied(backend: Backend) {
    let app = spawn_app_with_config(backend, |config| {
        config.billing.stripe.webhook_secret = STRIPE_SECRET.into();
    })
    .await;
    let account = account(&app, "Card Payer").await;
    let invoice = issued_invoice(&app, &account, "120.00", "USD").await;
    let invoice_id = invoice["id"].as_str().expect("id");
    let succeeded: Value = serde_json::from_str(
        &std::fs::read_to_string("fixtures/stripe/payment_intent_succeeded.json").expect("fixture"),
    )
    .expect("json");
    let mut succeeded = succeeded;
    succeeded["data"]["object"]["metadata"] =
        json!({"account_id": account, "invoice_id": invoice_id});

    // A bad signature, a stale one and none at all are refused, and nothing is kept.
    let raw = serde_json::to_vec(&succeeded).expect("json");
    let now = chrono::Utc::now().timestamp();
    let forged = connectors::stripe::sign("whsec_wrong", now, &raw);
    assert_eq!(stripe(&app, &succeeded, Some(forged)).await.status(), 401);
    let stale = connectors::stripe::sign(STRIPE_SECRET, now - 301, &raw);
    assert_eq!(stripe(&app, &succeeded, Some(stale)).await.status(), 401);
    assert_eq!(
        stripe(&app, &succeeded, Some(String::new())).await.status(),
        401
    );
    assert_eq!(app.inbox_total().await, 0);

    let first = stripe(&app, &succeeded, None).await;
    assert_eq!(first.status(), 200);
    let receipt: Value = first.json().await.expect("receipt");
    let inbound = receipt["items"][0]["id"]
        .as_str()
        .expect("inbound id")
        .to_owned();
    let row = app.settled_inbound(&inbound).await;
    assert_eq!(row["status"], "done", "{row}");
    // The same event again is a replay: answered alike, not processed twice.
    let replay = stripe(&app, &succeeded, None).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let again: Value = replay.json().await.expect("receipt");
    assert_eq!(again["items"][0]["id"], inbound.as_str());
    assert_eq!(app.inbox_total().await, 1);
    let (_, payments) = app.get_json("/v1/payments").await;
    let items = payments["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    let payment = &items[0]["fields"];
    assert_eq!(payment["amount"], "120.00");
    assert_eq!(payment["currency"], "USD");
    assert_eq!(payment["provider"], "stripe");
    assert_eq!(payment["provider_ref"], "pi_3MtwBwLkdIwHu7ix28a3tqPa");
    assert_eq!(self::invoice(&app, invoice_id).await["status"], "paid");

    // A partial refund of the charge.
    let refunded: Value = serde_json::from_str(
        &std::fs::read_to_string("fixtures/stripe/charge_refunded.json").expect("fixture"),
    )
    .expect("json");
    let response = stripe(&app, &refunded, None).await;
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.expect("receipt");
    let row = app
        .settled_inbound(receipt["items"][0]["id"].as_str().expect("id"))
        .await;
    assert_eq!(row["status"], "done", "{row}");
    let (_, payments) = app.get_json("/v1/payments").await;
    let payment = &payments["items"][0]["fields"];
    assert_eq!(payment["refunded_amount"], "20.00");
    assert_eq!(payment["status"], "partially_refunded");
    let fields = self::invoice(&app, invoice_id).await;
    assert_eq!(fields["amount_paid"], "100.00");
    assert_eq!(fields["status"], "partially_paid");
    // Events we do not handle are acknowledged and not kept.
    let other = json!({"id": "evt_other", "object": "event", "type": "customer.created",
                       "data": {"object": {"id": "cus_1", "currency": "usd"}}});
    assert_eq!(stripe(&app, &other, None).await.status(), 200);
    assert_eq!(app.inbox_total().await, 2);
    app.stop().await;
}

async fn the_ageing_report_buckets_what_is_owed_by_days_past_due(backend: Backend) {
    let app = spawn_app(backend).await;
    let acme = account(&app, "Acme").await;
    let globex = account(&app, "Globex").await;
    let issue =
        |account: String, date: &'static str, amount: &'static str, currency: &'static str| {
            let app = &app;
            async move {
                created(
                    app,
                    "/v1/invoices",
                    json!({"account_id": account, "currency": currency, "issue": true,
                       "issue_date": date, "payment_terms_days": 0,
                       "lines": [{"quantity": "1", "unit_price": amount}]}),
                )
                .await["invoice"]
                    .clone()
            }
        };
    // Days past due as of 2026-07-01.
    issue(acme.clone(), "2026-07-01", "10.00", "EUR").await; // current
    issue(acme.clone(), "2026-06-01", "20.00", "EUR").await; // 30
    issue(acme.clone(), "2026-05-01", "30.00", "EUR").await; // 61
    let partly = issue(acme.clone(), "2026-03-01", "40.00", "EUR").await; // 122
    issue(acme.clone(), "2026-05-31", "5.00", "USD").await; // 31
    issue(globex.clone(), "2026-04-02", "50.00", "EUR").await; // 90
    let paid = issue(globex.clone(), "2026-04-02", "70.00", "EUR").await;
    created(
        &app,
        "/v1/payments",
        json!({"amount": "15.00", "currency": "EUR", "invoice_id": partly["id"]}),
    )
    .await;
    created(
        &app,
        "/v1/payments",
        json!({"amount": "70.00", "currency": "EUR", "invoice_id": paid["id"]}),
    )
    .await;
    let (status, report) = app.get_json("/v1/reports/ageing?as_of=2026-07-01").await;
    assert_eq!(status, 200, "{report}");
    let row = |account: &str, currency: &str| {
        report["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["account_id"] == account && r["currency"] == currency)
            .cloned()
            .unwrap_or_else(|| panic!("no row for {account} {currency}: {report}"))
    };
    let acme_eur = row(&acme, "EUR");
    assert_eq!(acme_eur["current"], "10.00");
    assert_eq!(acme_eur["days_1_30"], "20.00");
    assert_eq!(acme_eur["days_31_60"], "0.00");
    assert_eq!(acme_eur["days_61_90"], "30.00");
    assert_eq!(acme_eur["days_90_plus"], "25.00");
    assert_eq!(acme_eur["total"], "85.00");
    assert_eq!(row(&acme, "USD")["days_31_60"], "5.00");
    let globex_eur = row(&globex, "EUR");
    assert_eq!(globex_eur["days_61_90"], "50.00");
    assert_eq!(
        globex_eur["total"], "50.00",
        "the paid invoice owes nothing"
    );
    let eur_total = report["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .find(|r| r["currency"] == "EUR")
        .cloned()
        .expect("EUR totals");
    assert_eq!(eur_total["total"], "135.00");
    // Past-due invoices are overdue now.
    assert_eq!(
        self::invoice(&app, partly["id"].as_str().expect("id")).await["status"],
        "overdue"
    );
    app.stop().await;
}

async fn payments_import_from_a_spreadsheet(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Importer").await;
    let invoice = issued_invoice(&app, &account, "75.00", "EUR").await;
    let number = invoice["fields"]["number"].as_str().expect("number");
    let csv = format!(
        "invoice_number,amount,currency,reference,account_id\n\
         {number},75.00,eur,BANK-1,{account}\n\
         {number},5.00,USD,BANK-2,{account}\n\
         ,12.50,EUR,BANK-3,{account}\n"
    );
    let form = reqwest::multipart::Form::new()
        .text("mapping", "payments")
        .part(
            "file",
            reqwest::multipart::Part::bytes(csv.into_bytes())
                .file_name("payments.csv")
                .mime_str("text/csv")
                .expect("mime"),
        );
    let response = app
        .client
        .post(format!("{}/v1/imports", app.base))
        .bearer_auth(&app.admin_token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("json");
    let import_id = accepted["id"].as_str().expect("import id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let (_, status) = app.get_json(&format!("/v1/imports/{import_id}")).await;
        if status["status"] == "done" && status["processed"]["pending"] == 0 {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status["processed"]["created"], 2, "{status}");
    assert_eq!(status["processed"]["failed"], 1, "the USD row: {status}");
    let fields = self::invoice(&app, invoice["id"].as_str().expect("id")).await;
    assert_eq!(fields["status"], "paid");
    let (_, credit) = app
        .get_json(&format!("/v1/accounts/{account}/credit"))
        .await;
    let (_, payments) = app.get_json("/v1/payments").await;
    assert_eq!(credit["credit"]["EUR"], "12.50", "{credit} {payments}");
    app.stop().await;
}

/// A user of `role` and their token.
async fn user_token(app: &TestApp, email: &str, role: &str) -> String {
    let (status, user) = post(
        app,
        "/v1/admin/users",
        json!({"email": email, "name": email, "role": role}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().expect("user id");
    let (status, token) = post(
        app,
        &format!("/v1/admin/users/{id}/tokens"),
        json!({"name": "test"}),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    token["token"].as_str().expect("token").to_owned()
}

async fn billing_is_permission_checked_searchable_and_documented(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Rights AG").await;
    let rep = user_token(&app, "rep@example.org", "rep").await;
    let finance = user_token(&app, "finance@example.org", "finance").await;
    let body = json!({"account_id": account, "currency": "EUR", "issue": true,
                      "lines": [{"quantity": "1", "unit_price": "10"}]});
    let refused = app.post_json(&rep, "/v1/invoices", &body).await;
    assert_eq!(refused.status(), 403, "a rep does not invoice");
    let response = app.post_json(&finance, "/v1/invoices", &body).await;
    assert_eq!(response.status(), 201);
    let invoice: Value = response.json().await.expect("json");
    let id = invoice["invoice"]["id"].as_str().expect("id");
    let number = invoice["invoice"]["fields"]["number"]
        .as_str()
        .expect("number");
    let refused = app
        .post_json(
            &rep,
            "/v1/payments",
            &json!({"amount": "10.00", "currency": "EUR", "invoice_id": id}),
        )
        .await;
    assert_eq!(refused.status(), 403);
    let paid = app
        .post_json(
            &finance,
            "/v1/payments",
            &json!({"amount": "10.00", "currency": "EUR", "invoice_id": id,
                    "provider_ref": "TRF-2026-4711"}),
        )
        .await;
    assert_eq!(paid.status(), 201);
    // The change is on the audit trail with the finance user as actor.
    let (_, audit) = app.get_json(&format!("/v1/invoices/{id}/audit")).await;
    assert!(
        audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["field"] == "amount_paid"
                && e["new_value"] == "10.00"
                && e["actor"].as_str().is_some_and(|a| a.starts_with("user:"))),
        "{audit}"
    );
    // Found by its number.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, found) = app
            .get_json(&format!("/v1/search?q={number}&kind=invoices"))
            .await;
        if found["hits"]
            .as_array()
            .is_some_and(|hits| hits.iter().any(|h| h["id"] == id))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A payment is found by the reference finance has in hand.
    loop {
        let (_, found) = app
            .get_json("/v1/search?q=TRF-2026-4711&kind=payments")
            .await;
        if found["hits"]
            .as_array()
            .is_some_and(|hits| hits.iter().any(|h| h["kind"] == "payments"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, openapi) = app.get_json("/openapi.json").await;
    for path in [
        "/v1/orders",
        "/v1/orders/{id}/status",
        "/v1/invoices/{id}/credit-notes",
        "/v1/invoices/{id}/pdf",
        "/v1/payments/{id}/refunds",
        "/v1/reports/ageing",
        "/v1/webhooks/stripe",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} missing");
    }
    app.stop().await;
}

async fn concurrent_payments_to_one_invoice_all_count(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = account(&app, "Many Payers").await;
    let invoice = issued_invoice(&app, &account, "100.00", "EUR").await;
    let id = invoice["id"].as_str().expect("id").to_owned();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, base, token, id) = (
            app.client.clone(),
            app.base.clone(),
            app.admin_token.clone(),
            id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/payments"))
                .bearer_auth(&token)
                .json(&json!({"amount": "10.00", "currency": "EUR", "invoice_id": id}))
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), 201);
    }
    // No payment overwrote another's allocation.
    let fields = self::invoice(&app, &id).await;
    assert_eq!(fields["amount_paid"], "80.00");
    assert_eq!(fields["status"], "partially_paid");
    let (_, allocations) = app
        .get_json(&format!("/v1/payment_allocations?invoice_id={id}"))
        .await;
    assert_eq!(allocations["items"].as_array().map(Vec::len), Some(8));
    app.stop().await;
}
