//! Febrl CSV loading shared by the `febrl` example and the integration test.
//! Shows the column mapping a user would configure; `soc_sec_id` is dropped.

#![allow(dead_code)]

use matching::Record;
use std::collections::HashSet;
use std::io::{self, BufRead};

/// Split one CSV line (RFC 4180 quotes supported; no embedded newlines).
pub fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Read a febrl CSV (by header name) into records keyed by `rec_id`.
pub fn read_febrl(reader: impl BufRead) -> io::Result<Vec<Record>> {
    let mut lines = reader.lines();
    let header = match lines.next() {
        Some(h) => split_csv(&h?),
        None => return Ok(Vec::new()),
    };
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let idx: Vec<Option<usize>> = [
        "rec_id",
        "given_name",
        "surname",
        "street_number",
        "address_1",
        "address_2",
        "suburb",
        "postcode",
        "state",
        "date_of_birth",
    ]
    .iter()
    .map(|n| col(n))
    .collect();
    let mut out = Vec::new();
    for line in lines {
        let line = line?;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let row = split_csv(&line);
        let get = |i: usize| -> Option<String> {
            let v = idx[i].and_then(|c| row.get(c))?.trim();
            (!v.is_empty()).then(|| v.to_string())
        };
        let street = match (get(3), get(4)) {
            (Some(n), Some(s)) => Some(format!("{n} {s}")),
            (n, s) => n.or(s),
        };
        out.push(Record {
            id: get(0).unwrap_or_default(),
            first_name: get(1),
            last_name: get(2),
            street,
            address2: get(5),
            city: get(6),
            postcode: get(7),
            state: get(8),
            dob: get(9),
            ..Default::default()
        });
    }
    Ok(out)
}

/// "rec-12-dup-3" -> "12": febrl's entity label, used only for scoring.
pub fn entity(id: &str) -> &str {
    id.split('-').nth(1).unwrap_or(id)
}

/// True duplicate pairs implied by febrl ids, as (smaller, larger).
pub fn truth_pairs(ids: &[&str]) -> HashSet<(String, String)> {
    let mut by: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for id in ids {
        by.entry(entity(id)).or_default().push(id);
    }
    let mut out = HashSet::new();
    for members in by.values() {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                out.insert(canon(a, b));
            }
        }
    }
    out
}

pub fn canon(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.into(), b.into())
    } else {
        (b.into(), a.into())
    }
}

/// (precision, recall, f1) of `pred` against `truth`.
pub fn prf(pred: &HashSet<(String, String)>, truth: &HashSet<(String, String)>) -> (f64, f64, f64) {
    let tp = pred.intersection(truth).count() as f64;
    let p = if pred.is_empty() {
        0.0
    } else {
        tp / pred.len() as f64
    };
    let r = if truth.is_empty() {
        0.0
    } else {
        tp / truth.len() as f64
    };
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f)
}
