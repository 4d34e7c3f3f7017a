//! Streaming dedup with clusters, and batch pair scoring.

use crate::blocking::Candidates;
use crate::matcher::{Band, Matcher, Score};
use crate::record::{Prepared, Record};

/// What happened to a record added to a [`Deduper`]. Ids are insertion
/// indexes; `into` is the cluster's id (the index of a member).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No match: the record starts its own cluster.
    New { id: usize },
    /// Auto-merged into cluster `into`; `score` is against its best member.
    Merge {
        id: usize,
        into: usize,
        score: Score,
    },
    /// Starts its own cluster but may duplicate record `with`: ask a steward.
    Review {
        id: usize,
        with: usize,
        score: Score,
    },
}

/// Streaming deduper. Every member of a cluster stays indexed under its own
/// keys and is compared on its own, so a cluster matches any member's values.
pub struct Deduper {
    matcher: Matcher,
    records: Vec<Prepared>,
    parent: Vec<u32>,
    candidates: Candidates,
    // Per-add scratch: (cluster root, best total, best member).
    best: Vec<(u32, f64, u32)>,
    comparisons: u64,
}

impl Deduper {
    pub fn new(matcher: Matcher) -> Self {
        let candidates = Candidates::new(matcher.config().blocking.clone());
        Self {
            matcher,
            records: Vec::new(),
            parent: Vec::new(),
            candidates,
            best: Vec::new(),
            comparisons: 0,
        }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Pair comparisons made so far (a measure of blocking cost).
    pub fn comparisons(&self) -> u64 {
        self.comparisons
    }

    /// Blocking-index entries visited so far.
    pub fn visited(&self) -> u64 {
        self.candidates.visited
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Prepared form of record `id`.
    pub fn record(&self, id: usize) -> Option<&Prepared> {
        self.records.get(id)
    }

    pub fn add(&mut self, rec: &Record) -> Decision {
        let p = self.matcher.prepare(rec);
        self.add_prepared(p)
    }

    pub fn add_prepared(&mut self, p: Prepared) -> Decision {
        let id = self.records.len() as u32;
        self.best.clear();
        let (review, merge) = (self.matcher.config().review, self.matcher.config().merge);
        let candidates = self.candidates.collect(&p);
        for &c in candidates {
            let root = find(&mut self.parent, c);
            // One merge-level member is enough to place the record in a cluster.
            if self.best.iter().any(|b| b.0 == root && b.1 >= merge) {
                continue;
            }
            self.comparisons += 1;
            let Some(t) = self
                .matcher
                .total_above(&p, &self.records[c as usize], review)
            else {
                continue;
            };
            match self.best.iter_mut().find(|b| b.0 == root) {
                Some(b) if b.1 < t => *b = (root, t, c),
                Some(_) => {}
                None => self.best.push((root, t, c)),
            }
        }
        self.candidates.insert(id);
        self.parent.push(id);
        self.best.sort_by(|a, b| b.1.total_cmp(&a.1));
        let decision = match self.best.first() {
            None => Decision::New { id: id as usize },
            Some(&(root, t, member)) => {
                let score = self.matcher.score(&p, &self.records[member as usize]);
                if self.matcher.band(t) == Band::Merge {
                    self.parent[id as usize] = root;
                    if self.matcher.config().link_clusters {
                        let merge = self.matcher.config().merge;
                        for &(other, t2, _) in &self.best[1..] {
                            if t2 >= merge {
                                union(&mut self.parent, root, other);
                            }
                        }
                    }
                    let into = find(&mut self.parent, id) as usize;
                    Decision::Merge {
                        id: id as usize,
                        into,
                        score,
                    }
                } else {
                    Decision::Review {
                        id: id as usize,
                        with: member as usize,
                        score,
                    }
                }
            }
        };
        self.records.push(p);
        decision
    }

    /// Cluster id of record `id` (stable until a later merge joins clusters).
    pub fn cluster_of(&mut self, id: usize) -> usize {
        find(&mut self.parent, id as u32) as usize
    }

    /// Clusters with more than one member, each sorted by id.
    pub fn clusters(&mut self) -> Vec<Vec<usize>> {
        let mut by_root: std::collections::HashMap<u32, Vec<usize>> = Default::default();
        for i in 0..self.parent.len() {
            let r = find(&mut self.parent, i as u32);
            by_root.entry(r).or_default().push(i);
        }
        let mut out: Vec<Vec<usize>> = by_root.into_values().filter(|m| m.len() > 1).collect();
        out.sort();
        out
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let gp = parent[parent[x as usize] as usize];
        parent[x as usize] = gp;
        x = gp;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // Keep the older id as the cluster id.
        let (keep, join) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[join as usize] = keep;
    }
}

/// A scored candidate pair from [`batch_pairs`] (`a < b`, record indexes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub a: usize,
    pub b: usize,
    pub total: f64,
    pub band: Band,
}

/// Score every blocked pair of `records` and return those at or above the
/// review threshold. Blocks larger than `max_scan` are compared within a
/// sliding window of that size (sorted neighbourhood in input order).
pub fn batch_pairs(matcher: &Matcher, records: &[Record]) -> Vec<ScoredPair> {
    let prepared: Vec<Prepared> = records.iter().map(|r| matcher.prepare(r)).collect();
    batch_prepared(matcher, &prepared)
}

/// [`batch_pairs`] over already prepared records.
pub fn batch_prepared(matcher: &Matcher, prepared: &[Prepared]) -> Vec<ScoredPair> {
    let mut cands = Candidates::new(matcher.config().blocking.clone());
    let mut out = Vec::new();
    for (i, p) in prepared.iter().enumerate() {
        for &c in cands.collect(p) {
            if let Some(total) =
                matcher.total_above(p, &prepared[c as usize], matcher.config().review)
            {
                out.push(ScoredPair {
                    a: c as usize,
                    b: i,
                    total,
                    band: matcher.band(total),
                });
            }
        }
        cands.insert(i as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MatchConfig;

    fn rec(first: &str, last: &str, email: &str, phone: &str) -> Record {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Record {
            first_name: s(first),
            last_name: s(last),
            email: s(email),
            phone: s(phone),
            postcode: Some("SW1A 1AA".into()),
            ..Default::default()
        }
    }

    #[test]
    fn stream_merges_by_any_member() {
        let mut d = Deduper::new(Matcher::new(MatchConfig::default()).unwrap());
        assert_eq!(
            d.add(&rec("John", "Smith", "js@x.com", "")),
            Decision::New { id: 0 }
        );
        // Same email, different format phone: merges.
        let m = d.add(&rec("john", "smith", "JS+crm@x.com", "020 7946 0958"));
        assert!(matches!(m, Decision::Merge { id: 1, into: 0, .. }), "{m:?}");
        // Matches only member 1's phone: still joins cluster 0.
        let m = d.add(&rec("Jon", "Smith", "", "2079460958"));
        assert!(matches!(m, Decision::Merge { id: 2, into: 0, .. }), "{m:?}");
        assert_eq!(
            d.add(&rec("Mary", "Jones", "mj@y.com", "")),
            Decision::New { id: 3 }
        );
        assert_eq!(d.clusters(), vec![vec![0, 1, 2]]);
        assert_eq!(d.cluster_of(3), 3);
    }

    #[test]
    fn weak_evidence_goes_to_review() {
        let mut d = Deduper::new(Matcher::new(MatchConfig::default()).unwrap());
        // Same name in the same postcode, nothing else: not enough to merge.
        let name_only = Record {
            postcode: None,
            ..rec("John", "Smith", "", "")
        };
        d.add(&name_only);
        match d.add(&Record {
            city: Some("London".into()),
            ..name_only.clone()
        }) {
            Decision::Review {
                id: 1,
                with: 0,
                score,
            } => {
                assert!(score.total >= 10.0 && score.total < 20.0)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_returns_scored_pairs() {
        let m = Matcher::new(MatchConfig::default()).unwrap();
        let recs = vec![
            rec("John", "Smith", "js@x.com", ""),
            rec("Mary", "Jones", "", ""),
            rec("Smith", "John", "js@x.com", ""),
        ];
        let pairs = batch_pairs(&m, &recs);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].a, pairs[0].b, pairs[0].band), (0, 2, Band::Merge));
    }
}
