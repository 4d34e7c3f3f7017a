//! Candidate generation. Each record yields a handful of blocking keys
//! (exact email/phone, plus pairs of cheap signatures such as surname
//! Soundex + dob); records sharing a key are compared. Blocks are linked
//! lists in one flat `Vec`, newest first, so scanning the most recent
//! `max_scan` members of a giant block costs the same as a small one.

use crate::config::BlockingConfig;
use crate::record::{Field, Prepared};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// American Soundex of the letters of `s` (e.g. "robert" -> "R163").
pub fn soundex(s: &str) -> [u8; 4] {
    let code = |c: u8| match c {
        b'b' | b'f' | b'p' | b'v' => b'1',
        b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => b'2',
        b'd' | b't' => b'3',
        b'l' => b'4',
        b'm' | b'n' => b'5',
        b'r' => b'6',
        b'h' | b'w' => b'-', // transparent: do not break a run
        _ => b'0',           // vowels (and others) separate runs
    };
    let mut out = [b'0'; 4];
    let mut letters = s.bytes().filter(u8::is_ascii_lowercase);
    let Some(first) = letters.next() else {
        return out;
    };
    out[0] = first.to_ascii_uppercase();
    let mut last = code(first);
    let mut n = 1;
    for c in letters {
        let d = code(c);
        if d == b'-' {
            continue;
        }
        if d != b'0' && d != last {
            out[n] = d;
            n += 1;
            if n == 4 {
                break;
            }
        }
        last = d;
    }
    out
}

/// FNV-1a over tagged parts; collisions only add candidates, never merges.
fn key(tag: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(tag);
    for p in parts {
        p.iter().for_each(|&b| eat(b));
        eat(0xff);
    }
    // Low bit reserved for the names-only flag.
    if tag == NAMES_TAG { h } else { h & !1 }
}

/// Tag of the names-only key; its low bit is set on the hash so the index
/// can give it a smaller scan limit.
const NAMES_TAG: u8 = 3;

/// Blocking keys of a prepared record, appended to `out`. Keys with the
/// low bit set are names-only keys.
pub fn keys(p: &Prepared, out: &mut Vec<u64>) {
    out.clear();
    for (tag, f) in [(1, Field::Email), (2, Field::Phone)] {
        if let Some(v) = p.get(f) {
            out.push(key(tag, &[v.as_bytes()]));
        }
    }
    let sx: Vec<[u8; 4]> = [Field::FirstName, Field::LastName]
        .iter()
        .filter_map(|&f| p.get(f).map(soundex))
        .collect();
    // Day and month sorted so a swapped dob still shares keys.
    let dob = p.get(Field::Dob).filter(|d| d.len() == 8).map(|d| {
        let (m, dd) = (&d[4..6], &d[6..8]);
        let (lo, hi) = if m <= dd { (m, dd) } else { (dd, m) };
        format!("{}{lo}{hi}", &d[..4])
    });
    let postcode = p.get(Field::Postcode);
    if let [a, b] = sx.as_slice() {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        out.push(key(NAMES_TAG, &[lo, hi]) | 1);
    }
    // Per name, not per role, so first/last swaps still collide.
    for s in &sx {
        if let Some(d) = &dob {
            out.push(key(4, &[s, d.as_bytes()]));
        }
        if let Some(pc) = postcode {
            out.push(key(5, &[s, pc.as_bytes()]));
        }
    }
    if let (Some(d), Some(pc)) = (&dob, postcode) {
        out.push(key(7, &[d.as_bytes(), pc.as_bytes()]));
    }
    if let (Some(d), Some(c)) = (&dob, p.get(Field::City)) {
        out.push(key(6, &[d.as_bytes(), c.as_bytes()]));
    }
    if let (Some(st), Some(c)) = (p.get(Field::Street), p.get(Field::City)) {
        out.push(key(9, &[st.as_bytes(), c.as_bytes()]));
    }
    let house = p.get(Field::Street).and_then(|s| s.split(' ').next());
    if let (Some(h), Some(pc)) = (house, postcode) {
        out.push(key(8, &[h.as_bytes(), pc.as_bytes()]));
    }
    out.sort_unstable();
    out.dedup();
}

/// Keys are already hashes: pass them through.
#[derive(Default)]
pub struct IdHasher(u64);

/// A map by blocking key, hashed by [`IdHasher`] (keys are FNV hashes already).
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const END: u32 = u32::MAX;

/// Inverted index from blocking key to records, plus candidate de-duplication.
pub struct Candidates {
    heads: KeyMap<(u32, u32)>,
    /// (record, next entry) — singly linked, newest first.
    entries: Vec<(u32, u32)>,
    seen: Vec<u32>,
    generation: u32,
    keys: Vec<u64>,
    out: Vec<u32>,
    cfg: BlockingConfig,
    /// Index entries visited so far (cost metric).
    pub visited: u64,
}

impl Candidates {
    pub fn new(cfg: BlockingConfig) -> Self {
        Self {
            heads: HashMap::default(),
            entries: Vec::new(),
            seen: Vec::new(),
            generation: 0,
            keys: Vec::with_capacity(16),
            out: Vec::with_capacity(64),
            cfg,
            visited: 0,
        }
    }

    /// Records sharing a key with `p` (each once). Call [`Self::insert`]
    /// afterwards to index `p` under the same keys.
    pub fn collect(&mut self, p: &Prepared) -> &[u32] {
        keys(p, &mut self.keys);
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
        self.out.clear();
        for k in &self.keys {
            let Some(&(mut e, _)) = self.heads.get(k) else {
                continue;
            };
            let limit = if k & 1 == 1 {
                self.cfg.name_scan
            } else {
                self.cfg.max_scan
            };
            let mut n = 0;
            while e != END && n < limit {
                let (rec, next) = self.entries[e as usize];
                let slot = &mut self.seen[rec as usize];
                if *slot != self.generation {
                    *slot = self.generation;
                    self.out.push(rec);
                }
                e = next;
                n += 1;
                self.visited += 1;
            }
        }
        &self.out
    }

    /// Index record number `rec` under the keys of the last `collect`.
    pub fn insert(&mut self, rec: u32) {
        if self.seen.len() <= rec as usize {
            self.seen.resize(rec as usize + 1, 0);
        }
        for &k in &self.keys {
            let entry = self.heads.entry(k).or_insert((END, 0));
            if entry.1 as usize >= self.cfg.max_block {
                continue;
            }
            let id = u32::try_from(self.entries.len()).unwrap_or(END);
            self.entries.push((rec, entry.0));
            *entry = (id, entry.1 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{PrepareOptions, Record};

    #[test]
    fn soundex_codes() {
        assert_eq!(&soundex("robert"), b"R163");
        assert_eq!(&soundex("rupert"), b"R163");
        assert_eq!(&soundex("ashcraft"), b"A261");
        assert_eq!(&soundex("tymczak"), b"T522");
        assert_eq!(&soundex("pfister"), b"P236");
        assert_eq!(&soundex("lee"), b"L000");
        assert_eq!(&soundex(""), b"0000");
    }

    fn prep(first: &str, last: &str, dob: &str) -> Prepared {
        let r = Record {
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            dob: Some(dob.into()),
            ..Default::default()
        };
        Prepared::new(&r, &PrepareOptions::default())
    }

    #[test]
    fn swapped_names_and_dates_share_keys() {
        let mut c = Candidates::new(BlockingConfig::default());
        assert!(c.collect(&prep("john", "smith", "19800102")).is_empty());
        c.insert(0);
        assert_eq!(c.collect(&prep("smith", "jon", "19800201")), &[0]);
        c.insert(1);
        assert_eq!(c.collect(&prep("mary", "jones", "19711111")), &[] as &[u32]);
    }

    #[test]
    fn scan_is_capped() {
        let cfg = BlockingConfig {
            max_scan: 3,
            name_scan: 3,
            max_block: 5,
        };
        let mut c = Candidates::new(cfg);
        for i in 0..10 {
            c.collect(&prep("john", "smith", "19800102"));
            c.insert(i);
        }
        let got = c.collect(&prep("john", "smith", "19800102")).to_vec();
        assert_eq!(got.len(), 3);
        assert!(
            got.iter().all(|&r| r < 5),
            "block stopped growing at max_block"
        );
    }
}
