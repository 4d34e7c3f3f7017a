//! Writes a benchmark spreadsheet: `cargo run --release --example import_gen -- OUT.xlsx OUT.csv [ROWS]`
//! (12 columns, 1,000,000 rows by default; the xlsx in constant-memory mode).

use std::io::{BufWriter, Write};

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

const HEADERS: [&str; 12] = [
    "First Name",
    "Last Name",
    "E-mail Address",
    "Phone",
    "Organisation",
    "Job Title",
    "City",
    "Country",
    "Signup Date",
    "Revenue",
    "Lead Source",
    "Notes",
];
const CITIES: [&str; 6] = ["Berlin", "Madrid", "Lyon", "Porto", "Leeds", "Graz"];

fn cells(i: u32) -> [String; 12] {
    [
        format!("First{i}"),
        format!("Last{}", i % 9973),
        format!("person{i}@example{}.org", i % 97),
        format!("{}", 4_915_100_000_000_u64 + u64::from(i)),
        format!("Company {}", i % 5003),
        "Buyer".to_owned(),
        CITIES[i as usize % CITIES.len()].to_owned(),
        "DE".to_owned(),
        format!("2024-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
        format!("{}", (i % 1000) * 125),
        "trade fair".to_owned(),
        format!("row {i} imported for the benchmark"),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (xlsx, csv) = (&args[1], &args[2]);
    let rows: u32 = args.get(3).map_or(Ok(1_000_000), |r| r.parse())?;

    let mut out = BufWriter::new(std::fs::File::create(csv)?);
    writeln!(out, "{}", HEADERS.join(","))?;
    for i in 1..=rows {
        writeln!(out, "{}", cells(i).join(","))?;
    }
    out.flush()?;

    let mut book = Workbook::new();
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let sheet = book.add_worksheet_with_constant_memory()?;
    for (c, h) in HEADERS.iter().enumerate() {
        sheet.write_string(0, c as u16, *h)?;
    }
    for i in 1..=rows {
        let row = cells(i);
        for (c, value) in row.iter().enumerate() {
            let c16 = c as u16;
            match c {
                3 | 9 => {
                    sheet.write_number(i, c16, value.parse::<f64>()?)?;
                }
                8 => {
                    let d = ExcelDateTime::parse_from_str(value)?;
                    sheet.write_datetime_with_format(i, c16, d, &date)?;
                }
                _ => {
                    sheet.write_string(i, c16, value)?;
                }
            }
        }
    }
    book.save(xlsx)?;
    eprintln!("wrote {rows} rows to {xlsx} and {csv}");
    Ok(())
}
