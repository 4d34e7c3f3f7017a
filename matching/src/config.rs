//! Match configuration: Fellegi–Sunter style per-field levels with m/u
//! probabilities, thresholds, and the defaults a user would start from.

use crate::compare::Comparator;
use crate::error::ConfigError;
use crate::record::{Field, PrepareOptions};
use serde::Deserialize;

/// One agreement level: a similarity at or above `at_least` falls here.
/// `m` = P(level | same person), `u` = P(level | different people); the
/// level's weight is log2(m/u) bits of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Level {
    pub at_least: f64,
    pub m: f64,
    pub u: f64,
}

/// m/u for the "nothing matched" level.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Probs {
    pub m: f64,
    pub u: f64,
}

/// How one field is compared and weighted. A missing value on either side
/// contributes 0 (no evidence either way).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FieldRule {
    pub field: Field,
    pub comparator: Comparator,
    /// Agreement levels, strictly descending `at_least`.
    pub levels: Vec<Level>,
    pub disagree: Probs,
}

/// Candidate generation limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BlockingConfig {
    /// Compare against at most this many most-recent members of one block.
    pub max_scan: usize,
    /// Scan limit for the names-only key (weakest, largest blocks).
    pub name_scan: usize,
    /// Stop adding to a block beyond this size: the key is too common to help.
    pub max_block: usize,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        Self {
            max_scan: 48,
            name_scan: 16,
            max_block: 2000,
        }
    }
}

/// Full matcher configuration (deserialisable, e.g. from TOML).
#[derive(Debug, Clone, Deserialize)]
pub struct MatchConfig {
    /// Total weight (bits) at or above which a pair is merged automatically.
    pub merge: f64,
    /// Total weight at or above which a pair goes to a steward.
    pub review: f64,
    /// Also try first/last name swapped, at `swap_penalty` bits.
    #[serde(default)]
    pub swap_names: bool,
    #[serde(default = "default_swap_penalty")]
    pub swap_penalty: f64,
    /// In streaming mode, a record that reaches `merge` with several
    /// clusters joins them all (transitive merge) instead of only the best.
    #[serde(default = "yes")]
    pub link_clusters: bool,
    pub fields: Vec<FieldRule>,
    #[serde(default)]
    pub prepare: PrepareOptions,
    #[serde(default)]
    pub blocking: BlockingConfig,
}

fn yes() -> bool {
    true
}

fn default_swap_penalty() -> f64 {
    2.0
}

impl MatchConfig {
    /// Check probabilities, level order, thresholds and duplicate fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.merge < self.review {
            return Err(ConfigError::Thresholds {
                merge: self.merge,
                review: self.review,
            });
        }
        let ok = |p: f64| p > 0.0 && p <= 1.0;
        let mut seen = Vec::new();
        for r in &self.fields {
            let name = r.field.name().to_string();
            if seen.contains(&r.field) {
                return Err(ConfigError::DuplicateField(name));
            }
            seen.push(r.field);
            let probs = r
                .levels
                .iter()
                .map(|l| (l.m, l.u))
                .chain([(r.disagree.m, r.disagree.u)]);
            for (m, u) in probs {
                if !ok(m) || !ok(u) {
                    return Err(ConfigError::Probability { field: name, m, u });
                }
            }
            let ordered = r.levels.windows(2).all(|w| w[0].at_least > w[1].at_least)
                && r.levels.iter().all(|l| (0.0..=1.0).contains(&l.at_least));
            if !ordered {
                return Err(ConfigError::LevelOrder { field: name });
            }
        }
        Ok(())
    }
}

fn lv(at_least: f64, m: f64, u: f64) -> Level {
    Level { at_least, m, u }
}

fn rule(field: Field, comparator: Comparator, levels: Vec<Level>, m: f64, u: f64) -> FieldRule {
    FieldRule {
        field,
        comparator,
        levels,
        disagree: Probs { m, u },
    }
}

impl Default for MatchConfig {
    /// Person/lead defaults. m ≈ how often a true duplicate agrees at that
    /// level (data-entry error rates of a few %), u ≈ how often two different
    /// people do (roughly 1 / number of common values).
    fn default() -> Self {
        use Comparator::*;
        use Field::*;
        let name_levels = |u_exact: f64| {
            vec![
                lv(1.0, 0.85, u_exact),
                lv(0.92, 0.07, 0.003),
                lv(0.85, 0.03, 0.01),
            ]
        };
        let fields = vec![
            rule(FirstName, JaroWinkler, name_levels(0.01), 0.05, 0.977),
            rule(LastName, JaroWinkler, name_levels(0.002), 0.05, 0.985),
            rule(Email, Exact, vec![lv(1.0, 0.85, 1e-5)], 0.15, 1.0),
            rule(Phone, Exact, vec![lv(1.0, 0.8, 1e-5)], 0.2, 1.0),
            rule(
                Company,
                TokenSet,
                vec![lv(0.95, 0.75, 0.002), lv(0.8, 0.1, 0.01)],
                0.15,
                0.988,
            ),
            rule(
                Street,
                TokenSet,
                vec![
                    lv(0.95, 0.75, 0.0005),
                    lv(0.8, 0.12, 0.002),
                    lv(0.6, 0.05, 0.02),
                ],
                0.08,
                0.977,
            ),
            rule(
                Address2,
                TokenSet,
                vec![lv(0.95, 0.7, 0.001), lv(0.8, 0.12, 0.003)],
                0.18,
                0.996,
            ),
            rule(
                City,
                JaroWinkler,
                vec![lv(0.97, 0.8, 0.01), lv(0.88, 0.1, 0.01)],
                0.1,
                0.98,
            ),
            rule(
                Postcode,
                Numeric,
                vec![lv(1.0, 0.8, 0.005), lv(0.7, 0.1, 0.02)],
                0.1,
                0.975,
            ),
            rule(State, Exact, vec![lv(1.0, 0.9, 0.3)], 0.1, 0.7),
            rule(Country, Exact, vec![lv(1.0, 0.97, 0.6)], 0.03, 0.4),
            rule(
                Dob,
                Date,
                vec![
                    lv(1.0, 0.8, 0.0002),
                    lv(0.9, 0.03, 0.00005),
                    lv(0.8, 0.1, 0.001),
                    lv(0.5, 0.03, 0.01),
                ],
                0.04,
                0.989,
            ),
        ];
        Self {
            merge: 20.0,
            review: 10.0,
            swap_names: true,
            swap_penalty: default_swap_penalty(),
            link_clusters: true,
            fields,
            prepare: PrepareOptions::default(),
            blocking: BlockingConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        MatchConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_configs() {
        let mut c = MatchConfig::default();
        c.fields[0].levels[0].u = 0.0;
        assert!(matches!(c.validate(), Err(ConfigError::Probability { .. })));
        let mut c = MatchConfig::default();
        c.fields[0].levels.reverse();
        assert!(matches!(c.validate(), Err(ConfigError::LevelOrder { .. })));
        let mut c = MatchConfig::default();
        c.review = c.merge + 1.0;
        assert!(matches!(c.validate(), Err(ConfigError::Thresholds { .. })));
        let mut c = MatchConfig::default();
        let dup = c.fields[0].clone();
        c.fields.push(dup);
        assert!(matches!(c.validate(), Err(ConfigError::DuplicateField(_))));
    }
}
