//! Spreadsheet imports end to end: upload, dry run, background read into the inbox,
//! processing, progress and errors, on both backends.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Backend, spawn_app, spawn_app_with, test_config};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sqlx::Row;

on_both_backends!(
    an_xlsx_import_ends_with_every_row_processed_and_leads_readable,
    a_dry_run_proposes_and_writes_nothing,
    a_reupload_is_recognised,
    csv_in_windows_1252_and_utf8_bom_with_semicolons_reads_right,
    an_ods_workbook_reads,
    files_that_cannot_be_imported_are_refused_clearly,
    two_hundred_columns_and_ragged_rows_are_kept,
    an_oversize_upload_is_refused_with_a_clear_message,
    an_import_is_undone_from_the_audit_trail,
    a_zoom_attendee_report_makes_attendance_on_leads_with_the_event_as_campaign,
    rows_of_one_upload_share_their_domains_account,
    a_row_the_pipeline_fails_is_counted_once_through_a_retry,
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/imports")
        .join(name)
}

async fn upload(
    app: &common::TestApp,
    name: &str,
    bytes: Vec<u8>,
    extra: &[(&str, &str)],
) -> (reqwest::StatusCode, Value) {
    let mut form = Form::new().part("file", Part::bytes(bytes).file_name(name.to_owned()));
    for (key, value) in extra {
        form = form.text(key.to_string(), value.to_string());
    }
    let response = app
        .client
        .post(format!("{}/v1/imports", app.base))
        .bearer_auth(&app.admin_token)
        .multipart(form)
        .send()
        .await
        .expect("upload sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn settled_import(app: &common::TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = app.get_json(&format!("/v1/imports/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let read_done = body["status"] == "done" || body["status"] == "failed";
        if read_done && body["processed"]["pending"] == 0 {
            return body;
        }
        assert!(Instant::now() < deadline, "import {id} not settled: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads `csv` as `people.csv` and waits for every row to settle: the import's id and
/// its final state.
async fn imported_csv(app: &common::TestApp, csv: &str) -> (String, Value) {
    let (status, accepted) = upload(app, "people.csv", csv.as_bytes().to_vec(), &[]).await;
    assert_eq!(status, 202, "{accepted}");
    let import_id = accepted["id"].as_str().expect("import id").to_owned();
    let done = settled_import(app, &import_id).await;
    (import_id, done)
}

async fn count(app: &common::TestApp, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

async fn an_xlsx_import_ends_with_every_row_processed_and_leads_readable(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = upload(&app, "leads.xlsx", fixture("leads.xlsx"), &[]).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let done = settled_import(&app, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["rows_read"], 5, "{done}");
    assert_eq!(done["rows_accepted"], 4, "{done}");
    assert_eq!(done["rows_rejected_at_read"], 1, "{done}");
    assert_eq!(done["processed"]["created"], 4, "{done}");
    assert_eq!(done["percent"], 100.0);
    assert_eq!(done["errors"][0]["row"], 7, "{done}");
    assert_eq!(done["errors"][0]["column"], "E-mail Address");

    let row = sqlx::query("SELECT result FROM inbox WHERE source = $1 AND external_id = $2")
        .bind(format!("import:{id}"))
        .bind("row:3")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let result: Value = serde_json::from_str(&row.get::<String, _>(0)).unwrap();
    let lead_id = result["id"].as_str().unwrap();
    let (status, lead) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    assert_eq!(status, 200);
    let fields = &lead["fields"];
    assert_eq!(fields["first_name"], "Ada");
    assert_eq!(fields["last_name"], "Lovelace");
    assert_eq!(fields["email"], "ada@analytical.example");
    assert_eq!(fields["company"], "Analytical Engines");
    assert_eq!(fields["title"], "Programmer");
    assert_eq!(fields["source"], format!("import:{id}"));
    let custom = &fields["custom"];
    assert_eq!(
        custom["mobile"], "4915112345678",
        "a phone stored as a number keeps its digits"
    );
    assert_eq!(custom["Signup Date"], "2024-03-01", "a date-formatted cell");
    assert_eq!(
        custom["Deal Total"], "1500",
        "a formula gives its cached value"
    );
    assert_eq!(
        custom["column_9"], "kept",
        "a blank header cell gets a name"
    );

    let response = app
        .client
        .get(format!("{}/v1/imports/{id}/errors.csv", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let csv = response.text().await.unwrap();
    assert!(
        csv.starts_with("row,column,reason\n7,E-mail Address,"),
        "{csv}"
    );
    app.stop().await;
}

/// The pipeline reads a batch's accounts by domain at once and keeps the ones it creates
/// in the transaction's journal: rows of one upload from a new domain make one account,
/// a known domain's account keeps its owner, free mail joins nothing.
/// The import's counters follow each row's fate: a row the pipeline fails counts as
/// failed, leaves that count when it is retried, and counts again when it fails again.
async fn a_row_the_pipeline_fails_is_counted_once_through_a_retry(backend: Backend) {
    let app = spawn_app(backend).await;
    let csv = "email,first_name,city\n\
               ann@example.org,Ann,Leeds\n\
               ,,Bristol\n";
    let (import_id, done) = imported_csv(&app, csv).await;
    assert_eq!(done["processed"]["created"], 1, "{done}");
    assert_eq!(done["processed"]["failed"], 1, "{done}");
    assert_eq!(done["percent"], 100.0, "{done}");
    let reason = done["errors"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("identifying"), "{done}");
    assert_eq!(done["errors"][0]["row"], 3, "{done}");

    let failed: String =
        sqlx::query_scalar("SELECT id FROM inbox WHERE source = $1 AND status = 'failed'")
            .bind(format!("import:{import_id}"))
            .fetch_one(app.store.pool())
            .await
            .expect("the failed row");
    let retried = app
        .post_json(
            &app.admin_token,
            &format!("/v1/inbound/{failed}/retry"),
            &Value::Null,
        )
        .await;
    assert!(retried.status().is_success(), "{}", retried.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, row) = app.get_json(&format!("/v1/inbound/{failed}")).await;
        if row["status"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "row not failed again: {row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = settled_import(&app, &import_id).await;
    assert_eq!(
        (
            &again["processed"]["created"],
            &again["processed"]["failed"]
        ),
        (&Value::from(1), &Value::from(1)),
        "{again}"
    );
    app.stop().await;
}

async fn rows_of_one_upload_share_their_domains_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .post_json(
            &app.admin_token,
            "/v1/accounts",
            &serde_json::json!({"name": "Owned Ltd", "domain": "owned.example", "owner_id": "u-owner"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let owned: Value = response.json().await.unwrap();
    let csv = "First Name,Last Name,Email\n\
               Ana,Lima,ana@newco.example\n\
               Bo,Berg,bo@newco.example\n\
               Cy,Cole,cy@owned.example\n\
               Di,Dunn,di@newco.example\n\
               Ed,Eady,ed.eady@gmail.com\n";
    let (status, body) = upload(&app, "domains.csv", csv.as_bytes().to_vec(), &[]).await;
    assert_eq!(status, 202, "{body}");
    let done = settled_import(&app, body["id"].as_str().unwrap()).await;
    assert_eq!(done["processed"]["created"], 5, "{done}");

    let mut by_email = std::collections::HashMap::new();
    for row in sqlx::query("SELECT email, account_id, owner_id FROM leads")
        .fetch_all(app.store.pool())
        .await
        .unwrap()
    {
        let email: String = row.get(0);
        let account: Option<String> = row.get(1);
        let owner: Option<String> = row.get(2);
        by_email.insert(email, (account, owner));
    }
    let newco = by_email["ana@newco.example"].0.clone().expect("linked");
    assert_ne!(newco, owned["id"].as_str().unwrap());
    assert_eq!(by_email["bo@newco.example"].0.as_ref(), Some(&newco));
    assert_eq!(by_email["di@newco.example"].0.as_ref(), Some(&newco));
    assert_eq!(
        by_email["cy@owned.example"],
        (
            owned["id"].as_str().map(str::to_owned),
            Some("u-owner".to_owned())
        ),
        "a known account's owner is kept"
    );
    assert_eq!(by_email["ed.eady@gmail.com"].0, None);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM accounts").await, 2);
    app.stop().await;
}

async fn a_dry_run_proposes_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = upload(
        &app,
        "leads.xlsx",
        fixture("leads.xlsx"),
        &[
            ("dry_run", "true"),
            ("mapping", r#"{"Job Title": "ignore"}"#),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["format"], "xlsx");
    assert_eq!(body["sheet"], "Leads", "the first non-empty sheet");
    assert_eq!(body["header_row"], 2);
    let columns = body["mapping"]["columns"].as_array().unwrap();
    let target = |header: &str| {
        columns
            .iter()
            .find(|c| c["header"] == header)
            .map(|c| c["target"].clone())
            .unwrap()
    };
    assert_eq!(target("E-mail Address"), "email");
    assert_eq!(target("Mobile No."), "mobile");
    assert_eq!(target("Organisation"), "company");
    assert_eq!(target("Job Title"), "ignore");
    assert_eq!(body["rows"].as_array().unwrap().len(), 4);
    assert_eq!(body["rows"][0]["fields"]["first_name"], "Ada");
    assert!(body["rows"][0]["fields"].get("title").is_none());
    assert_eq!(body["errors"][0]["row"], 7);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM imports").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM inbox").await, 0);

    let (status, body) = upload(
        &app,
        "leads.xlsx",
        fixture("leads.xlsx"),
        &[
            ("dry_run", "true"),
            ("mapping", r#"{"Job Title": "shoe_size"}"#),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("shoe_size"));
    app.stop().await;
}

async fn a_reupload_is_recognised(backend: Backend) {
    let app = spawn_app(backend).await;
    let bytes = fixture("utf8_bom_semicolon.csv");
    let (status, first) = upload(&app, "a.csv", bytes.clone(), &[]).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["existing"], false);
    settled_import(&app, first["id"].as_str().unwrap()).await;
    let (status, second) = upload(&app, "renamed.csv", bytes, &[]).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["existing"], true);
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["status"], "done");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM imports").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM inbox").await, 3);
    app.stop().await;
}

async fn csv_in_windows_1252_and_utf8_bom_with_semicolons_reads_right(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = upload(
        &app,
        "win.csv",
        fixture("windows1252.csv"),
        &[("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let row = &body["rows"][0]["fields"];
    assert_eq!(row["first_name"], "José");
    assert_eq!(row["city"], "Málaga");
    assert_eq!(row["company"], "Café Münster");

    let (status, body) = upload(
        &app,
        "bom.csv",
        fixture("utf8_bom_semicolon.csv"),
        &[("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let columns = body["mapping"]["columns"].as_array().unwrap();
    assert_eq!(
        columns[0]["header"], "Vorname",
        "the BOM is not part of the header"
    );
    assert_eq!(columns[0]["target"], "first_name");
    let row = &body["rows"][0]["fields"];
    assert_eq!(row["first_name"], "Jürgen");
    assert_eq!(row["last_name"], "Groß");
    assert_eq!(
        row["Umsatz"], "1.234.567,50",
        "free text custom field as written"
    );
    assert_eq!(
        row["Employees"], "1234",
        "a thousands separator in a number column"
    );
    app.stop().await;
}

async fn an_ods_workbook_reads(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = upload(&app, "leads.ods", fixture("leads.ods"), &[]).await;
    assert_eq!(status, 202, "{body}");
    let done = settled_import(&app, body["id"].as_str().unwrap()).await;
    assert_eq!(done["rows_read"], 2, "{done}");
    assert_eq!(done["processed"]["created"], 2, "{done}");
    app.stop().await;
}

async fn files_that_cannot_be_imported_are_refused_clearly(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        ("header_only.xlsx", 422, "header-only"),
        ("empty.xlsx", 422, "empty"),
        ("corrupt.xlsx", 422, "corrupt"),
        ("password.xlsx", 422, "password-protected"),
    ];
    for (name, status_wanted, code) in cases {
        let (status, body) = upload(&app, name, fixture(name), &[]).await;
        assert_eq!(status, status_wanted, "{name}: {body}");
        assert_eq!(
            body["type"],
            format!("https://leadgate.dev/problems/{code}"),
            "{name}: {body}"
        );
    }
    let (status, body) = upload(&app, "header_only.xlsx", fixture("header_only.xlsx"), &[]).await;
    assert_eq!(status, 422);
    assert_eq!(body["row"], 1, "{body}");
    let (status, body) = upload(&app, "notes.pdf", b"%PDF-1.4".to_vec(), &[]).await;
    assert_eq!(status, 415, "{body}");
    let (status, body) = upload(
        &app,
        "leads.xlsx",
        fixture("leads.xlsx"),
        &[("sheet", "Nope")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("Leads"), "{body}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM imports").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM inbox").await, 0);
    app.stop().await;
}

async fn two_hundred_columns_and_ragged_rows_are_kept(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = upload(
        &app,
        "wide.xlsx",
        fixture("wide_200.xlsx"),
        &[("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mapping"]["columns"].as_array().unwrap().len(), 200);
    assert_eq!(body["rows"][0]["fields"]["Attribute 200"], "r1c200");
    assert_eq!(body["rows"][0]["fields"]["email"], "wide1@example.org");

    let (status, body) = upload(&app, "ragged.csv", fixture("ragged.csv"), &[]).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap();
    let done = settled_import(&app, id).await;
    assert_eq!(done["rows_read"], 4, "{done}");
    assert_eq!(done["rows_accepted"], 3, "{done}");
    assert_eq!(done["processed"]["created"], 3, "{done}");
    let row = sqlx::query("SELECT fields FROM inbox WHERE source = $1 AND external_id = 'row:3'")
        .bind(format!("import:{id}"))
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let fields: Value = serde_json::from_str(&row.get::<String, _>(0)).unwrap();
    assert_eq!(
        fields["column_4"], "surplus",
        "cells past the header are kept: {fields}"
    );
    app.stop().await;
}

async fn an_oversize_upload_is_refused_with_a_clear_message(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(backend, &data).await;
    config.max_import_bytes = 4096;
    let app = spawn_app_with(config, data).await;
    let mut big = b"email\n".to_vec();
    while big.len() < 64 * 1024 {
        big.extend_from_slice(b"someone@example.org\n");
    }
    let (status, body) = upload(&app, "big.csv", big, &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("max_import_bytes"),
        "{body}"
    );
    let leftovers = std::fs::read_dir(app.config.data_dir.join("imports-tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "the partial upload is removed");
    app.stop().await;
}

/// Writes the fixtures in fixtures/imports/ (except password.xlsx, see its README).
/// `cargo test --test imports regenerate_fixtures -- --ignored`
#[test]
#[ignore]
fn regenerate_fixtures() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};
    use std::io::Write;

    let dir = fixture_path("");
    std::fs::create_dir_all(&dir).unwrap();

    let mut book = Workbook::new();
    book.add_worksheet().set_name("Empty").unwrap();
    let sheet = book.add_worksheet().set_name("Leads").unwrap();
    let headers = [
        "First",
        "Surname",
        "E-mail Address",
        "Mobile No.",
        "Organisation",
        "Job Title",
        "Signup Date",
        "Deal Total",
        "",
    ];
    for (c, h) in headers.iter().enumerate() {
        if !h.is_empty() {
            sheet.write_string(1, c as u16, *h).unwrap();
        }
    }
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let people = [
        (
            "Ada",
            "Lovelace",
            "ada@analytical.example",
            4915112345678.0,
            "Analytical Engines",
            "Programmer",
            (2024, 3, 1),
        ),
        (
            "Grace",
            "Hopper",
            "grace@navy.example",
            12025550101.0,
            "US Navy",
            "Rear Admiral",
            (2024, 3, 2),
        ),
        (
            "Alan",
            "Turing",
            "alan@bletchley.example",
            441234567890.0,
            "Bletchley Park",
            "Cryptanalyst",
            (2024, 3, 3),
        ),
        (
            "Katherine",
            "Johnson",
            "not-an-email",
            17575550100.0,
            "NASA",
            "Mathematician",
            (2024, 3, 4),
        ),
        (
            "Edsger",
            "Dijkstra",
            "edsger@tue.example",
            31402474747.0,
            "TU Eindhoven",
            "Professor",
            (2024, 3, 5),
        ),
    ];
    let mut row = 2_u32;
    for (i, p) in people.iter().enumerate() {
        if i == 1 {
            row += 1; // a blank row in the middle
        }
        sheet.write_string(row, 0, p.0).unwrap();
        sheet.write_string(row, 1, p.1).unwrap();
        sheet.write_string(row, 2, p.2).unwrap();
        sheet.write_number(row, 3, p.3).unwrap();
        sheet.write_string(row, 4, p.4).unwrap();
        sheet.write_string(row, 5, p.5).unwrap();
        let (y, m, d) = p.6;
        sheet
            .write_datetime_with_format(row, 6, ExcelDateTime::from_ymd(y, m, d).unwrap(), &date)
            .unwrap();
        sheet
            .write_formula(row, 7, Formula::new("=1000+500").set_result("1500"))
            .unwrap();
        sheet.write_string(row, 8, "kept").unwrap();
        row += 1;
    }
    book.save(dir.join("leads.xlsx")).unwrap();

    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["Name", "Email", "Phone"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    book.save(dir.join("header_only.xlsx")).unwrap();

    let mut book = Workbook::new();
    book.add_worksheet();
    book.save(dir.join("empty.xlsx")).unwrap();

    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    for c in 0..200_u16 {
        let header = match c {
            0 => "Email".to_owned(),
            _ => format!("Attribute {}", c + 1),
        };
        sheet.write_string(0, c, header).unwrap();
        for r in 1..=3_u32 {
            let value = match c {
                0 => format!("wide{r}@example.org"),
                _ => format!("r{r}c{}", c + 1),
            };
            sheet.write_string(r, c, value).unwrap();
        }
    }
    book.save(dir.join("wide_200.xlsx")).unwrap();

    let good = std::fs::read(dir.join("leads.xlsx")).unwrap();
    std::fs::write(dir.join("corrupt.xlsx"), &good[..good.len() / 2]).unwrap();

    let mut win = Vec::new();
    win.extend_from_slice(b"Name,Email,City,Company\r\n");
    win.extend_from_slice(b"Jos\xE9 Garc\xEDa,jose@example.es,M\xE1laga,Caf\xE9 M\xFCnster\r\n");
    win.extend_from_slice(b"Zo\xEB Smith,zoe@example.co.uk,Cork,\x93Quoted\x94 Ltd\r\n");
    std::fs::write(dir.join("windows1252.csv"), win).unwrap();

    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(
        "Vorname;Nachname;E-Mail;Umsatz;Employees\nJürgen;Groß;juergen@example.de;1.234.567,50;1.234\nAnaïs;Lefèvre;anais@example.fr;12,5;80\n\nSøren;Kierkegaard;soren@example.dk;;3\n"
            .as_bytes(),
    );
    std::fs::write(dir.join("utf8_bom_semicolon.csv"), bom).unwrap();

    std::fs::write(
        dir.join("ragged.csv"),
        "Name,Email,Company\nAda Lovelace,ada@example.org\nGrace Hopper,grace@example.org,Navy,surplus\nBad Row,nope,X\n\"Multi\nLine\",multi@example.org,Y,,,\n",
    )
    .unwrap();

    // A minimal OpenDocument spreadsheet: mimetype, manifest and content.
    let file = std::fs::File::create(dir.join("leads.ods")).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("mimetype", stored).unwrap();
    zip.write_all(b"application/vnd.oasis.opendocument.spreadsheet")
        .unwrap();
    zip.start_file("META-INF/manifest.xml", stored).unwrap();
    zip.write_all(br#"<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
</manifest:manifest>"#).unwrap();
    zip.start_file("content.xml", stored).unwrap();
    let cell = |v: &str| {
        format!(
            r#"<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>"#
        )
    };
    let rows = [
        ["Name", "Email", "Company"],
        ["Ada Lovelace", "ada@ods.example", "Analytical"],
        ["Grace Hopper", "grace@ods.example", "Navy"],
    ];
    let mut body = String::new();
    for r in rows {
        body.push_str("<table:table-row>");
        for v in r {
            body.push_str(&cell(v));
        }
        body.push_str("</table:table-row>");
    }
    write!(
        zip,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet><table:table table:name="Leads">{body}</table:table></office:spreadsheet></office:body></office:document-content>"#
    )
    .unwrap();
    zip.finish().unwrap();
}

async fn an_import_is_undone_from_the_audit_trail(backend: Backend) {
    let app = spawn_app(backend).await;
    let existing = app
        .post_json(
            &app.admin_token,
            "/v1/leads",
            &serde_json::json!({"email": "ada@example.org", "first_name": "Ada",
                                "last_name": "Lovelace"}),
        )
        .await;
    assert_eq!(existing.status(), 201);
    let existing: Value = existing.json().await.expect("lead");
    let lead_path = format!("/v1/leads/{}", existing["id"].as_str().expect("id"));

    let csv = "email,first_name,last_name,company,title\n\
               ada@example.org,Ada,Lovelace,Analytical Engines,Countess\n\
               grace@example.org,Grace,Hopper,US Navy,Rear Admiral\n";
    let (import_id, done) = imported_csv(&app, csv).await;
    assert_eq!(done["processed"]["merged"], 1, "{done}");
    assert_eq!(done["processed"]["created"], 1, "{done}");
    let (_, lead) = app.get_json(&lead_path).await;
    assert_eq!(lead["fields"]["company"], "Analytical Engines");
    let (_, grace) = app.get_json("/v1/leads?email=grace@example.org").await;
    let grace_id = grace["items"][0]["id"].as_str().expect("grace").to_owned();

    // Someone edits a field the import filled: the undo leaves their edit alone.
    let edited = app
        .client
        .patch(format!("{}{lead_path}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&serde_json::json!({"title": "Mathematician"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(edited.status(), 200);

    let undo = |app: &common::TestApp| {
        app.client
            .post(format!("{}/v1/imports/{import_id}/undo", app.base))
            .bearer_auth(&app.admin_token)
            .send()
    };
    let response = undo(&app).await.expect("undo");
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.expect("report");
    assert!(
        report["removed"].as_u64().expect("removed") >= 1,
        "{report}"
    );
    assert_eq!(report["kept"], 1, "{report}");
    assert!(
        report["restored"].as_u64().expect("restored") >= 1,
        "{report}"
    );

    let (_, lead) = app.get_json(&lead_path).await;
    assert!(lead["fields"]["company"].is_null(), "restored: {lead}");
    assert_eq!(lead["fields"]["title"], "Mathematician", "kept: {lead}");
    assert_eq!(lead["fields"]["email"], "ada@example.org");
    let (status, _) = app.get_json(&format!("/v1/leads/{grace_id}")).await;
    assert_eq!(status, 404, "the lead the import created is gone");
    let (_, import) = app.get_json(&format!("/v1/imports/{import_id}")).await;
    assert_eq!(import["status"], "undone");
    assert_eq!(undo(&app).await.expect("undo").status(), 409);

    // Grace can arrive again: a new lead, not a merge into the removed one.
    let again = app
        .post_json(
            &app.admin_token,
            "/v1/leads",
            &serde_json::json!({"email": "grace@example.org"}),
        )
        .await;
    assert_eq!(again.status(), 201);
    app.stop().await;
}

/// The timeline's `webinar` activities of a lead.
async fn webinar_activities(app: &common::TestApp, lead_id: &str) -> Vec<Value> {
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["fields"]["activity_type"] == "webinar")
        .cloned()
        .collect()
}

async fn lead_by_email(
    app: &common::TestApp,
    email: &str,
) -> Option<leadgate::store::read::Record> {
    app.store
        .find_by(leadgate::domain::RecordKind::Lead, "email", email, 2)
        .await
        .unwrap()
        .into_iter()
        .next()
}

async fn a_zoom_attendee_report_makes_attendance_on_leads_with_the_event_as_campaign(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    // Ada is known already (a partner sent her): the report merges into her lead.
    let key = app.partner_token("acme").await;
    let response = app
        .post_json(
            &key,
            "/v1/partner/leads?wait=true",
            &serde_json::json!({"first_name": "Ada", "last_name": "Lovelace",
                                "email": "ada@analytical.example"}),
        )
        .await;
    let known: Value = response.json().await.unwrap();
    assert_eq!(known["outcome"], "created", "{known}");

    let bytes = fixture("zoom_attendee_report.csv");
    let extra = [("mapping", "zoom_attendees")];
    // The dry run shows the attendee table's columns and rows, with the event on each.
    let (status, dry) = upload(
        &app,
        "zoom_attendee_report.csv",
        bytes.clone(),
        &[("mapping", "zoom_attendees"), ("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    let email_column = dry["mapping"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["header"] == "Email")
        .cloned()
        .expect("Email column");
    assert_eq!(email_column["target"], "email");
    assert_eq!(dry["rows"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(dry["rows"][0]["fields"]["event_topic"], "Q4 Product Launch");
    assert_eq!(dry["errors"][0]["column"], "Email");

    let (status, created) = upload(&app, "zoom_attendee_report.csv", bytes, &extra).await;
    assert_eq!(status, 202, "{created}");
    let done = settled_import(&app, created["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        done["rows_read"], 4,
        "host and panelist rows are not attendees: {done}"
    );
    assert_eq!(done["rows_accepted"], 3);
    assert_eq!(done["rows_rejected_at_read"], 1);
    assert_eq!(done["processed"]["merged"], 1, "{done}");
    assert_eq!(done["processed"]["created"], 2, "{done}");
    assert_eq!(done["percent"], 100.0);

    // Ada: the same lead, now with the webinar as campaign and 45 minutes of attendance.
    let ada = lead_by_email(&app, "ada@analytical.example").await.unwrap();
    assert_eq!(ada.id, known["record_id"].as_str().unwrap());
    assert_eq!(ada.fields["campaign"], "Q4 Product Launch");
    assert_eq!(ada.fields["company"], "Analytical Engines Ltd");
    assert_eq!(ada.fields["custom"]["zoom_event_id"], "812 3456 7890");
    let attended = webinar_activities(&app, &ada.id).await;
    assert_eq!(attended.len(), 1, "{attended:?}");
    assert_eq!(attended[0]["fields"]["duration_seconds"], 2700);
    assert!(
        attended[0]["fields"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("Attended Q4 Product Launch"),
        "{attended:?}"
    );

    // Grace is new; Alan registered but did not come, and that is what his timeline says.
    let grace = lead_by_email(&app, "grace@navy.example").await.unwrap();
    assert_eq!(grace.fields["campaign"], "Q4 Product Launch");
    assert_eq!(
        webinar_activities(&app, &grace.id).await[0]["fields"]["duration_seconds"],
        3420
    );
    let alan = lead_by_email(&app, "alan@bletchley.example").await.unwrap();
    let absent = webinar_activities(&app, &alan.id).await;
    assert!(
        absent[0]["fields"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("Registered for Q4 Product Launch, did not attend"),
        "{absent:?}"
    );
    assert!(absent[0]["fields"]["duration_seconds"].is_null());
    // The host and the panelist are not leads.
    assert!(lead_by_email(&app, "sam.host@example.com").await.is_none());
    assert!(lead_by_email(&app, "pat.panel@example.com").await.is_none());

    // An xlsx holding just the attendee table (a tidied export) is read as a plain table.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    let rows = [
        [
            "Attended",
            "First Name",
            "Last Name",
            "Email",
            "Time in Session (minutes)",
        ],
        ["Yes", "Lin", "Chen", "lin@example.org", "30"],
    ];
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            sheet.write_string(r as u32, c as u16, *cell).unwrap();
        }
    }
    let xlsx = book.save_to_buffer().unwrap();
    let (status, dry) = upload(
        &app,
        "attendees.xlsx",
        xlsx,
        &[("mapping", "zoom_attendees"), ("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["rows"][0]["fields"]["email"], "lin@example.org");
    assert_eq!(dry["rows"][0]["fields"]["duration_seconds"], 1800);
    assert_eq!(dry["rows"][0]["fields"]["attended"], true);

    // A mapping name that does not exist is refused.
    let (status, problem) = upload(
        &app,
        "zoom_attendee_report.csv",
        fixture("zoom_attendee_report.csv"),
        &[("mapping", "zoom_attendeez"), ("dry_run", "true")],
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    app.stop().await;
}
