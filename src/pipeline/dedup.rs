//! Dedup: candidates from the matcher's blocking keys (kept in the store, so every worker
//! and every restart sees the same memory), each compared field by field with the matcher;
//! above the merge threshold the arrival merges, between the thresholds a steward decides,
//! below it is new.

use std::collections::HashSet;

use matching::{Band, MatchConfig, Matcher, Record, blocking};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use super::Draft;
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::StoreError;
use crate::store::write::new_id;

/// Lead fields the matcher compares, and the matcher's name for each.
const MATCH_FIELDS: &[(&str, &str)] = &[
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("email", "email"),
    ("phone", "phone"),
    ("company", "company"),
    ("street", "street"),
    ("street2", "address2"),
    ("city", "city"),
    ("postal_code", "postcode"),
    ("region", "state"),
    ("country", "country"),
    ("birth_date", "dob"),
];

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    New,
    Merge {
        into: String,
        score: f64,
    },
    Review {
        with: String,
        score: f64,
        breakdown: Value,
    },
}

pub struct Dedup {
    matcher: Matcher,
    /// Members' prepared (normalised) values by member id. Members never change their
    /// values, so the cache needs no invalidation; it only saves re-normalising (phone
    /// parsing above all) a candidate every time it is compared.
    prepared:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<matching::Prepared>>>,
}

/// Prepared members kept at most; the cache starts over past this.
const PREPARED_CACHE: usize = 200_000;

impl Dedup {
    pub fn new(config: MatchConfig) -> Result<Self, matching::ConfigError> {
        Ok(Self {
            matcher: Matcher::new(config)?,
            prepared: Default::default(),
        })
    }

    /// Whether a change to `field` changes what the matcher compares.
    pub fn compares(field: &str) -> bool {
        MATCH_FIELDS.iter().any(|(name, _)| *name == field)
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// The matcher's view of a draft: raw values, which it normalises its own way.
    pub fn record_of(&self, draft: &Draft) -> Record {
        let mut object = serde_json::Map::new();
        for (field, name) in MATCH_FIELDS {
            if let Some(text) = draft.text(field) {
                object.insert((*name).to_owned(), Value::String(text));
            }
        }
        serde_json::from_value(Value::Object(object)).unwrap_or_default()
    }

    /// Compares the arrival with every remembered member sharing a blocking key.
    pub async fn decide(
        &self,
        conn: &mut AnyConnection,
        record: &Record,
    ) -> Result<Outcome, StoreError> {
        let prepared = self.matcher.prepare(record);
        let mut keys = Vec::new();
        blocking::keys(&prepared, &mut keys);
        let blocking = &self.matcher.config().blocking;
        let mut seen = HashSet::new();
        let mut best: Option<(f64, String, Record)> = None;
        for key in keys {
            // Names-only keys (low bit set) make the largest blocks; scan fewer of them.
            let limit = if key & 1 == 1 {
                blocking.name_scan
            } else {
                blocking.max_scan
            };
            let rows = sqlx::query(
                "SELECT m.id, m.record_id, m.match_values FROM match_keys k \
                 JOIN match_members m ON m.id = k.member_id \
                 WHERE k.key = $1 ORDER BY k.seq DESC LIMIT $2",
            )
            .bind(key as i64)
            .bind(limit as i64)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                let member: String = row.try_get("id")?;
                if !seen.insert(member.clone()) {
                    continue;
                }
                let cached = self
                    .prepared
                    .lock()
                    .ok()
                    .and_then(|cache| cache.get(&member).cloned());
                let candidate = match cached {
                    Some(candidate) => candidate,
                    None => {
                        let values: String = row.try_get("match_values")?;
                        let Ok(other) = serde_json::from_str::<Record>(&values) else {
                            continue;
                        };
                        let candidate = std::sync::Arc::new(self.matcher.prepare(&other));
                        if let Ok(mut cache) = self.prepared.lock() {
                            if cache.len() >= PREPARED_CACHE {
                                cache.clear();
                            }
                            cache.insert(member, candidate.clone());
                        }
                        candidate
                    }
                };
                let floor = best
                    .as_ref()
                    .map_or(self.matcher.config().review, |(score, _, _)| *score);
                if let Some(score) = self.matcher.total_above(&prepared, &candidate, floor)
                    && best.as_ref().is_none_or(|(top, _, _)| score > *top)
                {
                    let values: String = row.try_get("match_values")?;
                    let other = serde_json::from_str::<Record>(&values).unwrap_or_default();
                    best = Some((score, row.try_get("record_id")?, other));
                }
            }
        }
        Ok(match best {
            None => Outcome::New,
            Some((score, id, other)) => match self.matcher.band(score) {
                Band::Merge => Outcome::Merge { into: id, score },
                Band::Review => Outcome::Review {
                    with: id,
                    score,
                    breakdown: self.breakdown(record, &other),
                },
                Band::New => Outcome::New,
            },
        })
    }

    /// Field-by-field comparison, as stewards see it.
    pub fn breakdown(&self, a: &Record, b: &Record) -> Value {
        let score = self
            .matcher
            .score(&self.matcher.prepare(a), &self.matcher.prepare(b));
        json!({
            "total": score.total,
            "names_swapped": score.names_swapped,
            "fields": score.fields.iter().map(|f| json!({
                "field": f.field.name(),
                "similarity": f.similarity,
                "agreement": format!("{:?}", f.agreement).to_lowercase(),
                "weight": f.weight,
            })).collect::<Vec<_>>(),
        })
    }

    /// Remembers `record` as a member of `record_id`, under its blocking keys.
    pub async fn remember(
        &self,
        conn: &mut AnyConnection,
        kind: RecordKind,
        record_id: &str,
        source_id: &str,
        record: &Record,
    ) -> Result<(), StoreError> {
        let member = new_id();
        let values = serde_json::to_string(record)
            .map_err(|e| StoreError::Conflict(format!("match values: {e}")))?;
        sqlx::query(
            "INSERT INTO match_members (id, record_kind, record_id, source_id, match_values, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&member)
        .bind(kind.path())
        .bind(record_id)
        .bind(source_id)
        .bind(values)
        .bind(now_timestamp())
        .execute(&mut *conn)
        .await?;
        let mut keys = Vec::new();
        blocking::keys(&self.matcher.prepare(record), &mut keys);
        if keys.is_empty() {
            return Ok(());
        }
        let params: Vec<String> = (0..keys.len())
            .map(|n| format!("(${}, $1)", n + 2))
            .collect();
        let sql = format!(
            "INSERT INTO match_keys (key, member_id) VALUES {}",
            params.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(&member);
        for key in keys {
            query = query.bind(key as i64);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }
}

/// Members of `from` now belong to `to` (after a merge of two stored records).
pub async fn move_members(
    conn: &mut AnyConnection,
    kind: RecordKind,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE match_members SET record_id = $1 WHERE record_kind = $2 AND record_id = $3",
    )
    .bind(to)
    .bind(kind.path())
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn open_review(
    conn: &mut AnyConnection,
    kind: RecordKind,
    existing: &str,
    arrived: &str,
    score: f64,
    breakdown: &Value,
    inbound_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO review_pairs (id, record_kind, record_a, record_b, score, breakdown, status, \
         inbound_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8) \
         ON CONFLICT (record_kind, record_a, record_b) DO NOTHING",
    )
    .bind(new_id())
    .bind(kind.path())
    .bind(existing)
    .bind(arrived)
    .bind(score)
    .bind(breakdown.to_string())
    .bind(inbound_id)
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Remembers that `a` and `b` are two people, so the pair is not proposed again.
pub async fn remember_distinct(
    conn: &mut AnyConnection,
    kind: RecordKind,
    a: &str,
    b: &str,
    actor: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO review_pairs (id, record_kind, record_a, record_b, score, breakdown, status, \
         decided_by, decided_at, created_at) VALUES ($1, $2, $3, $4, 0, '{}', 'not_a_duplicate', $5, $6, $6) \
         ON CONFLICT (record_kind, record_a, record_b) DO UPDATE SET status = 'not_a_duplicate', \
         decided_by = $5, decided_at = $6",
    )
    .bind(new_id())
    .bind(kind.path())
    .bind(a)
    .bind(b)
    .bind(actor)
    .bind(now_timestamp())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
