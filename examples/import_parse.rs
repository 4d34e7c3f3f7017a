//! Parse rate alone (read + map, no store): `cargo run --release --example import_parse -- FILE...`
//! Prints rows, seconds, rows/s and the process's peak RSS (VmHWM) after each file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use leadgate::import::columns::ColumnMap;
use leadgate::import::reader::{self, Event, Flow, ReadOptions};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in std::env::args().skip(1) {
        let path = Path::new(&file);
        let format = reader::detect_format(&file, path)?;
        let started = Instant::now();
        let mut map = None;
        let (mut rows, mut rejected) = (0_u64, 0_u64);
        reader::read(path, format, &ReadOptions::default(), &mut |event| {
            match event {
                Event::Header(h) => {
                    map = Some(ColumnMap::propose(&h.names, &BTreeMap::new()).expect("mapping"))
                }
                Event::Rows(batch) => {
                    let map = map.as_ref().expect("header first");
                    for row in batch {
                        rows += 1;
                        if map.row_fields(&row.cells, &row.problems).is_err() {
                            rejected += 1;
                        }
                    }
                }
            }
            Ok(Flow::Continue)
        })?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{file}: {rows} rows ({rejected} rejected) in {secs:.2} s = {:.0} rows/s, peak RSS {} MiB",
            rows as f64 / secs,
            peak_rss_kib() / 1024
        );
    }
    Ok(())
}
