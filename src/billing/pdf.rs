//! An invoice as a PDF (A4, the standard Helvetica fonts, so no font files are shipped):
//! header, billed account, dates, lines, tax lines, totals and what is still due.

use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};
use serde_json::Value;

use super::lines::TaxLine;
use crate::store::read::Record;

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const TOP: f32 = 790.0;
const BOTTOM: f32 = 60.0;
const ROW: f32 = 16.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// One piece of text on a row: x, right-aligned, bold, size, text.
struct Cell {
    x: f32,
    right: bool,
    bold: bool,
    size: f32,
    text: String,
}

fn cell(x: f32, text: impl Into<String>) -> Cell {
    Cell {
        x,
        right: false,
        bold: false,
        size: 10.0,
        text: text.into(),
    }
}

fn amount(x: f32, text: impl Into<String>) -> Cell {
    Cell {
        right: true,
        ..cell(x, text)
    }
}

fn bold(mut c: Cell) -> Cell {
    c.bold = true;
    c
}

/// WinAnsi bytes of the text; characters it cannot show become `?`.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '€' => 0x80,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

/// Helvetica's average advance is about half an em; close enough to right-align figures.
fn width(text: &str, size: f32) -> f32 {
    text.chars()
        .map(|c| match c {
            '0'..='9' | '.' | ',' | '-' | ' ' => 0.556,
            'A'..='Z' => 0.667,
            _ => 0.5,
        })
        .sum::<f32>()
        * size
}

fn field<'a>(record: &'a Record, name: &str) -> &'a str {
    record
        .fields
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn rows_of(
    invoice: &Record,
    lines: &[Record],
    tax_lines: &[TaxLine],
    account_name: Option<&str>,
) -> Vec<Vec<Cell>> {
    let currency = field(invoice, "currency");
    let credit_note = field(invoice, "invoice_type") == "credit_note";
    let title = if credit_note {
        "CREDIT NOTE"
    } else {
        "INVOICE"
    };
    let mut rows: Vec<Vec<Cell>> = vec![
        vec![Cell {
            size: 20.0,
            ..bold(cell(50.0, title))
        }],
        vec![],
        vec![
            bold(cell(50.0, "Number")),
            cell(150.0, field(invoice, "number")),
        ],
        vec![cell(50.0, "Status"), cell(150.0, field(invoice, "status"))],
        vec![
            cell(50.0, "Issue date"),
            cell(150.0, field(invoice, "issue_date")),
        ],
    ];
    if !credit_note {
        rows.push(vec![
            cell(50.0, "Due date"),
            cell(150.0, field(invoice, "due_date")),
        ]);
    }
    rows.push(vec![
        cell(50.0, "Bill to"),
        cell(
            150.0,
            account_name
                .map(str::to_owned)
                .unwrap_or_else(|| field(invoice, "account_id").to_owned()),
        ),
    ]);
    if credit_note {
        rows.push(vec![
            cell(50.0, "Corrects"),
            cell(150.0, field(invoice, "corrects_invoice_id")),
        ]);
    }
    rows.push(vec![]);
    rows.push(vec![
        bold(cell(50.0, "#")),
        bold(cell(70.0, "Description")),
        bold(amount(330.0, "Qty")),
        bold(amount(400.0, "Unit price")),
        bold(amount(450.0, "Disc. %")),
        bold(amount(495.0, "Tax %")),
        bold(amount(545.0, "Amount")),
    ]);
    for line in lines {
        let position = line
            .fields
            .get("position")
            .and_then(Value::as_i64)
            .unwrap_or_default();
        let mut description = [field(line, "product"), field(line, "description")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" - ");
        if description.chars().count() > 48 {
            description = description.chars().take(47).collect::<String>() + "…";
        }
        rows.push(vec![
            cell(50.0, position.to_string()),
            cell(70.0, description),
            amount(330.0, field(line, "quantity")),
            amount(400.0, field(line, "unit_price")),
            amount(450.0, field(line, "discount")),
            amount(495.0, field(line, "tax_rate")),
            amount(545.0, field(line, "line_total")),
        ]);
    }
    rows.push(vec![]);
    rows.push(vec![
        cell(330.0, "Subtotal"),
        amount(545.0, format!("{} {currency}", field(invoice, "subtotal"))),
    ]);
    for tax in tax_lines {
        rows.push(vec![
            cell(330.0, format!("Tax {}% on {}", tax.rate, tax.base)),
            amount(545.0, format!("{} {currency}", tax.tax)),
        ]);
    }
    rows.push(vec![
        bold(cell(330.0, "Total")),
        bold(amount(
            545.0,
            format!("{} {currency}", field(invoice, "total")),
        )),
    ]);
    if !credit_note {
        let paid = field(invoice, "amount_paid");
        let credited = field(invoice, "amount_credited");
        rows.push(vec![
            cell(330.0, "Paid"),
            amount(545.0, format!("{paid} {currency}")),
        ]);
        rows.push(vec![
            cell(330.0, "Credited"),
            amount(545.0, format!("{credited} {currency}")),
        ]);
        let due = [("total", 1), ("amount_paid", -1), ("amount_credited", -1)]
            .iter()
            .map(|(name, sign)| {
                rust_decimal::Decimal::from_str_exact(field(invoice, name)).unwrap_or_default()
                    * rust_decimal::Decimal::from(*sign)
            })
            .sum::<rust_decimal::Decimal>();
        rows.push(vec![
            bold(cell(330.0, "Amount due")),
            bold(amount(
                545.0,
                format!("{} {currency}", super::money::text(due, currency)),
            )),
        ]);
    }
    rows
}

/// The PDF bytes of an invoice or credit note.
pub fn render(
    invoice: &Record,
    lines: &[Record],
    tax_lines: &[TaxLine],
    account_name: Option<&str>,
) -> Vec<u8> {
    let rows = rows_of(invoice, lines, tax_lines, account_name);
    let per_page = ((TOP - BOTTOM) / ROW) as usize;
    let pages: Vec<&[Vec<Cell>]> = rows.chunks(per_page.max(1)).collect();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let heavy = Ref::new(4);
    let first_page = 5;
    let page_ids: Vec<Ref> = (0..pages.len())
        .map(|n| Ref::new(first_page + 2 * n as i32))
        .collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(pages.len() as i32);
    pdf.type1_font(regular)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(heavy)
        .base_font(Name(b"Helvetica-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    for (n, page_rows) in pages.iter().enumerate() {
        let page_id = page_ids[n];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT))
            .parent(tree)
            .contents(content_id);
        page.resources()
            .fonts()
            .pair(REGULAR, regular)
            .pair(BOLD, heavy);
        drop(page);
        let mut content = Content::new();
        let mut y = TOP;
        for row in page_rows.iter() {
            for cell in row {
                let x = if cell.right {
                    cell.x - width(&cell.text, cell.size)
                } else {
                    cell.x
                };
                let bytes = win_ansi(&cell.text);
                content.begin_text();
                content.set_font(if cell.bold { BOLD } else { REGULAR }, cell.size);
                content.next_line(x, y);
                content.show(Str(&bytes));
                content.end_text();
            }
            y -= if row.iter().any(|c| c.size > 12.0) {
                ROW * 1.5
            } else {
                ROW
            };
        }
        let footer = format!("Page {} of {}", n + 1, pages.len());
        let bytes = win_ansi(&footer);
        content.begin_text();
        content.set_font(REGULAR, 8.0);
        content.next_line(50.0, 30.0);
        content.show(Str(&bytes));
        content.end_text();
        pdf.stream(content_id, &content.finish());
    }
    pdf.finish()
}
