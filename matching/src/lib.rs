//! Normalisation and duplicate detection for person / lead records.
//!
//! * [`normalise`]: per-field clean-up (email, phone, names, company, country, dates).
//! * [`MatchConfig`] / [`Matcher`]: Fellegi–Sunter style pair scoring — each
//!   field adds log2(m/u) bits for the agreement level it lands in, missing
//!   values add 0 — returned with a per-field breakdown.
//! * [`blocking`]: candidate generation (exact and fuzzy keys, capped blocks).
//! * [`Deduper`]: streaming dedup into clusters; [`batch_pairs`] for a `Vec`.

pub mod blocking;
pub mod compare;
mod config;
mod dedupe;
mod error;
mod matcher;
pub mod normalise;
mod record;

pub use compare::Comparator;
pub use config::{BlockingConfig, FieldRule, Level, MatchConfig, Probs};
pub use dedupe::{Decision, Deduper, ScoredPair, batch_pairs, batch_prepared};
pub use error::{ConfigError, NormaliseError};
pub use matcher::{Agreement, Band, FieldScore, Matcher, Score};
pub use record::{Field, PrepareOptions, Prepared, Record};
