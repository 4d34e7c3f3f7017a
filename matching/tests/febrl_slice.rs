//! Regression floor on a febrl3 slice: stream and batch dedup must keep
//! precision and recall above fixed floors (labels come from the rec ids).

#[path = "../examples/common/mod.rs"]
mod common;

use matching::{Band, Decision, Deduper, MatchConfig, Matcher, batch_pairs};
use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;

fn load() -> Vec<matching::Record> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/febrl3/febrl3_slice.csv"
    );
    let file = File::open(path).expect("fixture present");
    common::read_febrl(BufReader::new(file)).expect("fixture parses")
}

fn truth(records: &[matching::Record]) -> HashSet<(String, String)> {
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    common::truth_pairs(&ids)
}

#[test]
fn stream_clusters_are_accurate() {
    let records = load();
    assert!(records.len() > 300);
    let mut d = Deduper::new(Matcher::new(MatchConfig::default()).unwrap());
    let mut reviews = 0;
    for r in &records {
        if let Decision::Review { .. } = d.add(r) {
            reviews += 1;
        }
    }
    let mut pred = HashSet::new();
    for members in d.clusters() {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                pred.insert(common::canon(&records[a].id, &records[b].id));
            }
        }
    }
    let (p, r, f) = common::prf(&pred, &truth(&records));
    eprintln!("stream: precision {p:.4} recall {r:.4} f1 {f:.4} reviews {reviews}");
    assert!(p >= 0.99, "precision {p}");
    assert!(r >= 0.95, "recall {r}");
}

#[test]
fn batch_pairs_are_accurate() {
    let records = load();
    let m = Matcher::new(MatchConfig::default()).unwrap();
    let pred: HashSet<_> = batch_pairs(&m, &records)
        .into_iter()
        .filter(|p| p.band == Band::Merge)
        .map(|p| common::canon(&records[p.a].id, &records[p.b].id))
        .collect();
    let (p, r, f) = common::prf(&pred, &truth(&records));
    eprintln!("batch: precision {p:.4} recall {r:.4} f1 {f:.4}");
    assert!(p >= 0.99, "precision {p}");
    assert!(r >= 0.90, "recall {r}");
}

#[test]
fn soc_sec_id_is_not_loaded() {
    // The mapping has no slot for it; guard against someone adding one.
    let records = load();
    let first = &records[0];
    let all = format!("{first:?}");
    assert!(!all.contains("6630637"), "{all}");
}
