//! Pair scoring: sum of per-field log2(m/u) weights, with a breakdown.

use crate::compare::Comparator;
use crate::config::MatchConfig;
use crate::error::ConfigError;
use crate::record::{Field, Prepared, Record};

/// Which agreement level a field landed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// Missing on one side: weight 0.
    Missing,
    /// Index into the field's configured levels (0 = strongest).
    Level(usize),
    Disagree,
}

/// One field's contribution, for stewards.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldScore {
    pub field: Field,
    pub similarity: Option<f64>,
    pub agreement: Agreement,
    pub weight: f64,
}

/// Total match weight in bits plus how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub total: f64,
    /// First and last name were compared crosswise.
    pub names_swapped: bool,
    pub fields: Vec<FieldScore>,
}

/// Outcome band of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    Merge,
    Review,
    New,
}

struct Compiled {
    field: Field,
    comparator: Comparator,
    levels: Vec<(f64, f64)>,
    disagree: f64,
    /// Highest weight any level can give.
    best: f64,
}

impl Compiled {
    fn eval(&self, a: Option<&str>, b: Option<&str>) -> (Option<f64>, Agreement, f64) {
        let (Some(a), Some(b)) = (a, b) else {
            return (None, Agreement::Missing, 0.0);
        };
        let sim = self.comparator.similarity(a, b);
        for (i, &(at_least, w)) in self.levels.iter().enumerate() {
            if sim >= at_least {
                return (Some(sim), Agreement::Level(i), w);
            }
        }
        (Some(sim), Agreement::Disagree, self.disagree)
    }
}

/// A validated, precompiled [`MatchConfig`].
pub struct Matcher {
    config: MatchConfig,
    rules: Vec<Compiled>,
    /// Non-name rule indexes, strongest first, with the best weight still
    /// reachable from that rule on (for early exit in [`Self::total_above`]).
    order: Vec<(usize, f64)>,
    first: Option<usize>,
    last: Option<usize>,
}

impl Matcher {
    pub fn new(config: MatchConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let rules: Vec<Compiled> = config
            .fields
            .iter()
            .map(|r| {
                let levels: Vec<(f64, f64)> = r
                    .levels
                    .iter()
                    .map(|l| (l.at_least, (l.m / l.u).log2()))
                    .collect();
                let disagree = (r.disagree.m / r.disagree.u).log2();
                let best = levels.iter().map(|l| l.1).fold(disagree, f64::max);
                Compiled {
                    field: r.field,
                    comparator: r.comparator,
                    levels,
                    disagree,
                    best,
                }
            })
            .collect();
        let pos = |f: Field| rules.iter().position(|r| r.field == f);
        let (first, last) = (pos(Field::FirstName), pos(Field::LastName));
        let best = |r: &Compiled| r.best.max(0.0);
        let mut idx: Vec<usize> = (0..rules.len())
            .filter(|&i| !matches!(rules[i].field, Field::FirstName | Field::LastName))
            .collect();
        idx.sort_by(|&a, &b| best(&rules[b]).total_cmp(&best(&rules[a])));
        let mut order = Vec::with_capacity(idx.len());
        let mut rest = 0.0;
        for &i in idx.iter().rev() {
            rest += best(&rules[i]);
            order.push((i, rest));
        }
        order.reverse();
        Ok(Self {
            config,
            rules,
            order,
            first,
            last,
        })
    }

    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    /// Normalise a raw record with this matcher's options.
    pub fn prepare(&self, rec: &Record) -> Prepared {
        Prepared::new(rec, &self.config.prepare)
    }

    pub fn band(&self, total: f64) -> Band {
        if total >= self.config.merge {
            Band::Merge
        } else if total >= self.config.review {
            Band::Review
        } else {
            Band::New
        }
    }

    /// Should `b`'s names be read crosswise? Only when that scores better
    /// than the straight reading even after the penalty. Returns the
    /// decision and the name fields' combined weight.
    fn names(&self, a: &Prepared, b: &Prepared) -> (bool, f64) {
        let (Some(fi), Some(li)) = (self.first, self.last) else {
            return (false, 0.0);
        };
        let (f, l) = (&self.rules[fi], &self.rules[li]);
        let (af, al, bf, bl) = (
            a.get(Field::FirstName),
            a.get(Field::LastName),
            b.get(Field::FirstName),
            b.get(Field::LastName),
        );
        let straight = f.eval(af, bf).2 + l.eval(al, bl).2;
        if !self.config.swap_names || (af.is_some() && af == bf && al == bl) {
            return (false, straight);
        }
        // Skip the second comparison when even its best level cannot win.
        let half = f.eval(af, bl).2 - self.config.swap_penalty;
        if half + l.best <= straight {
            return (false, straight);
        }
        let cross = half + l.eval(al, bf).2;
        if cross > straight {
            (true, cross)
        } else {
            (false, straight)
        }
    }

    fn value(b: &Prepared, f: Field, swapped: bool) -> Option<&str> {
        match (f, swapped) {
            (Field::FirstName, true) => b.get(Field::LastName),
            (Field::LastName, true) => b.get(Field::FirstName),
            _ => b.get(f),
        }
    }

    /// Total weight only; no allocation (the hot path of blocking).
    pub fn total(&self, a: &Prepared, b: &Prepared) -> f64 {
        let (_, mut t) = self.names(a, b);
        for r in &self.rules {
            if !matches!(r.field, Field::FirstName | Field::LastName) {
                t += r.eval(a.get(r.field), b.get(r.field)).2;
            }
        }
        t
    }

    /// Like [`Self::total`] but gives up (`None`) as soon as the remaining
    /// fields cannot lift the total to `floor`: most blocked candidates are
    /// clear non-matches.
    pub fn total_above(&self, a: &Prepared, b: &Prepared, floor: f64) -> Option<f64> {
        let (_, mut t) = self.names(a, b);
        for &(i, reachable) in &self.order {
            if t + reachable < floor {
                return None;
            }
            let r = &self.rules[i];
            t += r.eval(a.get(r.field), b.get(r.field)).2;
        }
        (t >= floor).then_some(t)
    }

    /// Total with a per-field breakdown.
    pub fn score(&self, a: &Prepared, b: &Prepared) -> Score {
        let (swapped, _) = self.names(a, b);
        let mut total = if swapped {
            -self.config.swap_penalty
        } else {
            0.0
        };
        let fields = self
            .rules
            .iter()
            .map(|r| {
                let (similarity, agreement, weight) =
                    r.eval(a.get(r.field), Self::value(b, r.field, swapped));
                total += weight;
                FieldScore {
                    field: r.field,
                    similarity,
                    agreement,
                    weight,
                }
            })
            .collect();
        Score {
            total,
            names_swapped: swapped,
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(first: &str, last: &str, dob: &str, postcode: &str) -> Record {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Record {
            first_name: s(first),
            last_name: s(last),
            dob: s(dob),
            postcode: s(postcode),
            ..Default::default()
        }
    }

    fn total(m: &Matcher, a: &Record, b: &Record) -> Score {
        m.score(&m.prepare(a), &m.prepare(b))
    }

    #[test]
    fn agreement_beats_disagreement_and_missing_is_neutral() {
        let m = Matcher::new(MatchConfig::default()).unwrap();
        let a = rec("John", "Smith", "1980-01-02", "2119");
        let same = total(&m, &a, &rec("john", "smith", "19800102", "2119"));
        let typo = total(&m, &a, &rec("jon", "smith", "19800102", "2119"));
        let other = total(&m, &a, &rec("mary", "jones", "19751211", "4000"));
        let missing = total(&m, &a, &rec("john", "smith", "", ""));
        assert!(same.total > typo.total && typo.total > missing.total);
        assert!(other.total < 0.0);
        assert_eq!(m.band(same.total), Band::Merge);
        assert_eq!(m.band(other.total), Band::New);
        let dob = missing
            .fields
            .iter()
            .find(|f| f.field == Field::Dob)
            .unwrap();
        assert_eq!((dob.agreement, dob.weight), (Agreement::Missing, 0.0));
        let sum: f64 = same.fields.iter().map(|f| f.weight).sum();
        assert!((sum - same.total).abs() < 1e-9);
        let (pa, pb) = (m.prepare(&a), m.prepare(&a));
        assert!((m.total(&pa, &pb) - same.total).abs() < 1e-9);
        assert_eq!(m.total_above(&pa, &pb, same.total), Some(m.total(&pa, &pb)));
        assert_eq!(m.total_above(&pa, &pb, same.total + 0.1), None);
    }

    #[test]
    fn swapped_names_are_recognised() {
        let m = Matcher::new(MatchConfig::default()).unwrap();
        let a = rec("john", "smith", "19800102", "2119");
        let s = total(&m, &a, &rec("smith", "john", "19800102", "2119"));
        assert!(s.names_swapped);
        assert_eq!(m.band(s.total), Band::Merge);
    }
}
