//! Febrl3 accuracy benchmark (no soc_sec_id).
//!
//! cargo run --release --example febrl -- febrl3.csv out_pairs.csv [--mode stream|batch]
//!
//! Writes predicted duplicate pairs `id_a,id_b,score` for `score.py`, and the
//! review band to `<out>.review.csv`. Labels are only used for the summary
//! printed about the review band, never for matching.

mod common;

use matching::{Band, Decision, Deduper, MatchConfig, Matcher, batch_pairs};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

type Pairs = Vec<(usize, usize, f64)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        return Err("usage: febrl <febrl3.csv> <out_pairs.csv> [--mode stream|batch]".into());
    };
    let mode = args
        .iter()
        .position(|a| a == "--mode")
        .and_then(|i| args.get(i + 1))
        .map_or("stream", String::as_str);

    let start = Instant::now();
    let records = common::read_febrl(BufReader::new(File::open(input)?))?;
    let mut config = MatchConfig::default();
    // Febrl is Australian; only affects phone parsing (there are no phones).
    config.prepare.default_region = "AU".into();
    let matcher = Matcher::new(config)?;

    let (merged, review): (Pairs, Pairs) = match mode {
        "stream" => stream(matcher, &records),
        "batch" => {
            let pairs = batch_pairs(&matcher, &records);
            let pick = |b: Band| {
                pairs
                    .iter()
                    .filter(|p| p.band == b)
                    .map(|p| (p.a, p.b, p.total))
                    .collect()
            };
            (pick(Band::Merge), pick(Band::Review))
        }
        other => return Err(format!("unknown mode {other:?}").into()),
    };
    write_pairs(output, &records, &merged)?;
    let review_path = format!("{output}.review.csv");
    write_pairs(&review_path, &records, &review)?;
    let secs = start.elapsed().as_secs_f64();

    let true_review = review
        .iter()
        .filter(|(a, b, _)| common::entity(&records[*a].id) == common::entity(&records[*b].id))
        .count();
    println!(
        "mode={mode} records={} merge_pairs={} review_pairs={} (of which true duplicates: {true_review}) seconds={secs:.3}",
        records.len(),
        merged.len(),
        review.len()
    );
    println!("review band written to {review_path}");
    Ok(())
}

/// Records arrive one by one. Output: every pair inside a final cluster
/// (score = merge threshold unless a direct merge score is higher) plus the
/// direct merge decisions; the review band separately.
fn stream(matcher: Matcher, records: &[matching::Record]) -> (Pairs, Pairs) {
    let merge_at = matcher.config().merge;
    let mut d = Deduper::new(matcher);
    let (mut direct, mut review) = (Vec::new(), Vec::new());
    for r in records {
        match d.add(r) {
            Decision::Merge { id, into, score } => direct.push((id, into, score.total)),
            Decision::Review { id, with, score } => review.push((id, with, score.total)),
            Decision::New { .. } => {}
        }
    }
    let mut seen: HashSet<(usize, usize)> = HashSet::new();
    let mut out = Vec::new();
    for (a, b, s) in direct {
        seen.insert((a.min(b), a.max(b)));
        out.push((a, b, s));
    }
    for members in d.clusters() {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                if seen.insert((a, b)) {
                    out.push((a, b, merge_at));
                }
            }
        }
    }
    (out, review)
}

fn write_pairs(path: &str, records: &[matching::Record], pairs: &Pairs) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "id_a,id_b,score")?;
    for &(a, b, s) in pairs {
        writeln!(w, "{},{},{s:.3}", records[a].id, records[b].id)?;
    }
    w.flush()
}
